-- Why destinations fail and what happened to them (issue 12): Herald's own
-- tables beside Synapse's `destinations`, which stays as Synapse has it.

-- The last failure of each destination (kept after a success: the status
-- tells whether it still fails) and when a transaction was last delivered.
CREATE TABLE destination_health (
    destination TEXT PRIMARY KEY NOT NULL,
    last_error_ts BIGINT,
    last_error_kind TEXT,
    last_error_message TEXT,
    last_error_address TEXT,
    last_delivered_ts BIGINT
) WITHOUT ROWID;

-- What happened to each destination, newest last. A `failing` row is one
-- outage: its failures add to `count` and move `last_ts`. Bounded per
-- destination and in age (see herald-store's `history` module).
CREATE TABLE destination_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    ts BIGINT NOT NULL,
    event TEXT NOT NULL,
    last_ts BIGINT,
    count BIGINT,
    kind TEXT,
    message TEXT,
    outage_ms BIGINT,
    actor TEXT
);
CREATE INDEX destination_history_destination ON destination_history (destination, id);
CREATE INDEX destination_history_ts ON destination_history (ts);
