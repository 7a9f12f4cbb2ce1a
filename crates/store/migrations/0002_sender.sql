-- The federation sender's durable intake (issue 5). `outgoing_events` keeps
-- the `stream_ordering`, `event_id`, `room_id` and `received_ts` columns of
-- Synapse's `events`, with the PDU beside them in `json` (Synapse keeps it in
-- `event_json`). It is not called `events`: Herald's tables must not be
-- mistaken for Synapse's (a file holding Synapse's `events` is refused as
-- foreign). The queues are Herald's own design.

-- Accepted PDUs. AUTOINCREMENT: a stream ordering is never reused, even after
-- the newest rows are deleted, so orderings only grow across restarts.
CREATE TABLE outgoing_events (
    stream_ordering INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    json TEXT NOT NULL,
    received_ts BIGINT NOT NULL
);
CREATE INDEX outgoing_events_room_id ON outgoing_events (room_id, stream_ordering);

-- PDUs still to deliver, per destination. The primary key is the
-- "undelivered for a destination, in order" index.
CREATE TABLE destination_pdus (
    destination TEXT NOT NULL REFERENCES destinations (destination),
    stream_ordering BIGINT NOT NULL REFERENCES outgoing_events (stream_ordering),
    PRIMARY KEY (destination, stream_ordering)
) WITHOUT ROWID;

-- EDUs still to deliver, per destination, in arrival order (`id`).
CREATE TABLE destination_edus (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    edu_type TEXT NOT NULL,
    content TEXT NOT NULL,
    received_ts BIGINT NOT NULL
);
CREATE INDEX destination_edus_destination ON destination_edus (destination, id);

-- "Newest per (destination, room)" is destination_rooms' primary key; catch-up
-- reads a destination's rooms by stream ordering (oldest first).
CREATE INDEX destination_rooms_stream_ordering ON destination_rooms (destination, stream_ordering);
