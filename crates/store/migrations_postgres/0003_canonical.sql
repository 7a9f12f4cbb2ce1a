-- Whether a stored PDU or EDU content is canonical JSON (see
-- migrations/0003_canonical.sql): 1 since this migration, 0 before.
ALTER TABLE outgoing_events ADD COLUMN canonical BIGINT NOT NULL DEFAULT 0;
ALTER TABLE destination_edus ADD COLUMN canonical BIGINT NOT NULL DEFAULT 0;
