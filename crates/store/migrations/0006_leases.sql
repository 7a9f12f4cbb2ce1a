-- The same tables as migrations_postgres/0006_leases.sql. On SQLite one
-- `herald serve` holds every shard (its lock file says so): these tables
-- stay as created, unused.

CREATE TABLE herald_instances (
    instance_name TEXT PRIMARY KEY NOT NULL,
    started_ts INTEGER NOT NULL,
    heartbeat_ts INTEGER NOT NULL,
    -- "<key id> <public key>" of the signing key it signs with: every
    -- instance must sign with the same one (checked at start-up).
    signing_key TEXT,
    -- When it stopped cleanly (its shards freed); NULL while it runs.
    left_ts INTEGER
);

CREATE TABLE herald_shards (
    shard INTEGER PRIMARY KEY CHECK (shard >= 0 AND shard < 256),
    instance_name TEXT,
    expires_at INTEGER,
    generation INTEGER NOT NULL DEFAULT 0
);
WITH RECURSIVE n(shard) AS (SELECT 0 UNION ALL SELECT shard + 1 FROM n WHERE shard < 255)
INSERT INTO herald_shards (shard) SELECT shard FROM n;
