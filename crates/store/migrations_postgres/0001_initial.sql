-- Herald's first schema, on PostgreSQL: the same tables, columns and
-- indexes as migrations/0001_initial.sql (SQLite), in PostgreSQL's types.
-- `destinations` and `destination_rooms` keep Synapse's names and column
-- types. Names that are keys or sorted are `COLLATE "C"`: byte order, as
-- SQLite compares them, whatever the database's default collation.

CREATE TABLE herald_meta (
    key TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
INSERT INTO herald_meta (key, value) VALUES ('application', 'herald');

CREATE TABLE destinations (
    destination TEXT COLLATE "C" PRIMARY KEY,
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
    destination TEXT COLLATE "C" NOT NULL REFERENCES destinations (destination),
    room_id TEXT COLLATE "C" NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (destination, room_id)
);
CREATE INDEX destination_rooms_room_id ON destination_rooms (room_id);

CREATE TABLE users (
    name TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    admin BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL
);

-- Access tokens are stored only as SHA-256 hashes.
CREATE TABLE access_tokens (
    token_hash BYTEA PRIMARY KEY NOT NULL,
    user_name TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT
);
CREATE INDEX access_tokens_user ON access_tokens (user_name);
