-- Herald's first schema. `destinations` and `destination_rooms` keep
-- Synapse's names and columns so that rows can be copied from a Synapse
-- database and inspected with sqlite3.

CREATE TABLE herald_meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
INSERT INTO herald_meta (key, value) VALUES ('application', 'herald');

CREATE TABLE destinations (
    destination TEXT PRIMARY KEY,
    retry_last_ts BIGINT,
    retry_interval BIGINT,
    failure_ts BIGINT,
    last_successful_stream_ordering BIGINT
);

-- One index per sort order of the admin list, each with the name as the
-- tie-breaker (Synapse indexes only `destination`).
CREATE INDEX destinations_retry_last_ts ON destinations (retry_last_ts, destination);
CREATE INDEX destinations_retry_interval ON destinations (retry_interval, destination);
CREATE INDEX destinations_failure_ts ON destinations (failure_ts, destination);
CREATE INDEX destinations_last_successful_stream_ordering
    ON destinations (last_successful_stream_ordering, destination);

CREATE TABLE destination_rooms (
    destination TEXT NOT NULL REFERENCES destinations (destination),
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (destination, room_id)
) WITHOUT ROWID; -- the primary key holds every column: pages never touch a second b-tree
CREATE INDEX destination_rooms_room_id ON destination_rooms (room_id);

CREATE TABLE users (
    name TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    admin BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL
);

-- Access tokens are stored only as SHA-256 hashes.
CREATE TABLE access_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT
);
CREATE INDEX access_tokens_user ON access_tokens (user_name);
