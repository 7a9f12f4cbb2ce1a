-- destination_pdus by stream_ordering: the foreign key to outgoing_events
-- is checked through it when pruning deletes delivered events (without it,
-- a scan of the whole queue per deleted event), and the oldest undelivered
-- event (MIN(stream_ordering)) is read from it.
CREATE INDEX destination_pdus_stream_ordering ON destination_pdus (stream_ordering);
