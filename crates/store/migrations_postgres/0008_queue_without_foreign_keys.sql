-- The PDU queue without foreign keys on PostgreSQL. Each key cost a
-- trigger per queued row (a `SELECT … FOR KEY SHARE` of the row it names,
-- itself a WAL record): ~3.3 µs apiece of the ~10 µs a queue row cost,
-- measured on 1M rows. What they guarded is now held by locks taken once
-- per statement, not per row:
-- - a queue row's destination: the intake locks its destinations'
--   rows `FOR KEY SHARE` after inserting them (`outbox::lock_destinations`),
--   so a forget (`FOR UPDATE`) either precedes it (the row is inserted
--   again) or follows it (and deletes the new queue rows too); an import
--   that replaces the destinations locks the table first;
-- - a queue row's event: the intake locks an event it queues again
--   `FOR SHARE` (`outbox::stored_events`); pruning locks the events it
--   may delete `FOR UPDATE SKIP LOCKED`, then deletes only those no queue
--   row names in a statement that sees every commit before its locks.
-- SQLite keeps both keys (one writer at a time; a key check there is an
-- index lookup in the same process), and the tests run on both backends.
ALTER TABLE destination_pdus DROP CONSTRAINT destination_pdus_destination_fkey;
ALTER TABLE destination_pdus DROP CONSTRAINT destination_pdus_stream_ordering_fkey;
