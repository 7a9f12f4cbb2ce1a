-- Several Herald instances on one database: who is running, and which
-- instance holds which of the 256 shards of destinations (see
-- crates/store/src/leases.rs). Times are milliseconds since the epoch on
-- PostgreSQL's clock (`clock_timestamp()`), never an instance's.

CREATE TABLE herald_instances (
    instance_name TEXT COLLATE "C" PRIMARY KEY,
    started_ts BIGINT NOT NULL,
    heartbeat_ts BIGINT NOT NULL,
    -- "<key id> <public key>" of the signing key it signs with: every
    -- instance must sign with the same one (checked at start-up).
    signing_key TEXT,
    -- When it stopped cleanly (its shards freed); NULL while it runs.
    left_ts BIGINT
);

-- One row per shard, always 256 rows. `instance_name` NULL = free; a row
-- whose `expires_at` has passed is free too (its lease lapsed).
-- `generation` counts the claims of the shard.
CREATE TABLE herald_shards (
    shard INTEGER PRIMARY KEY CHECK (shard >= 0 AND shard < 256),
    instance_name TEXT COLLATE "C",
    expires_at BIGINT,
    generation BIGINT NOT NULL DEFAULT 0
);
INSERT INTO herald_shards (shard) SELECT generate_series(0, 255);
