-- Nothing on SQLite: PostgreSQL drops the foreign keys of destination_pdus
-- (see migrations_postgres/0008_queue_without_foreign_keys.sql); SQLite
-- keeps them. This version exists so both sets stay in step.
SELECT 1;
