#!/usr/bin/env python3
"""Rows in a real Synapse database, for the attached-mode tests.

    synapse-db.py DB seed N         N destinations in every state, with rooms
    synapse-db.py DB set NAME COLUMN VALUE   change one column of one row
    synapse-db.py DB get NAME        print one row as JSON

DB is an SQLite file or a postgresql:// URL (psycopg2, from Synapse's venv).
Synapse must be stopped while seeding (it caches what it reads); `set` runs
while it serves, standing in for Synapse's own writes.
"""

import json
import sys


def connect(db):
    if db.startswith("postgresql://") or db.startswith("postgres://"):
        import psycopg2

        conn = psycopg2.connect(db)
        return conn, "%s"
    import sqlite3

    return sqlite3.connect(db), "?"


def seed(conn, mark, n):
    """Destinations named dN.attached.test: a third healthy, a third backing
    off (failure_ts and a retry interval), a third never reached (NULL
    timings); every fifth has no stream ordering; rooms for some."""
    import time

    now = int(time.time() * 1000)
    cur = conn.cursor()
    rooms = [f"!room{r}:attached.test" for r in range(5)]
    for r, room in enumerate(rooms):
        cur.execute(
            f"INSERT INTO rooms (room_id, is_public, creator, room_version, has_auth_chain_index) "
            f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark})",
            (room, False, "@admin:attached.test", "10", True),
        )
    for i in range(n):
        name = f"d{i:04d}.attached.test"
        state = i % 3
        if state == 0:
            timings = (0, 0, None)
        elif state == 1:
            timings = (now - 60_000 * (i + 1), 600_000 * (i + 1), now - 3_600_000 - i)
        else:
            timings = (None, None, None)
        ordering = None if i % 5 == 0 else 1000 + i
        cur.execute(
            f"INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts, "
            f"last_successful_stream_ordering) VALUES ({mark}, {mark}, {mark}, {mark}, {mark})",
            (name, timings[0], timings[1], timings[2], ordering),
        )
        for room in rooms[: i % 4]:
            cur.execute(
                f"INSERT INTO destination_rooms (destination, room_id, stream_ordering) "
                f"VALUES ({mark}, {mark}, {mark})",
                (name, room, 1000 + i),
            )
    conn.commit()


COLUMNS = {"retry_last_ts", "retry_interval", "failure_ts", "last_successful_stream_ordering"}


def main():
    db, command, *args = sys.argv[1:]
    conn, mark = connect(db)
    cur = conn.cursor()
    if command == "seed":
        seed(conn, mark, int(args[0]))
    elif command == "set":
        name, column, value = args
        if column not in COLUMNS:
            sys.exit(f"unknown column {column}")
        value = None if value == "null" else int(value)
        cur.execute(f"UPDATE destinations SET {column} = {mark} WHERE destination = {mark}", (value, name))
        if cur.rowcount != 1:
            sys.exit(f"no destination {name}")
        conn.commit()
    elif command == "get":
        cur.execute(
            f"SELECT destination, retry_last_ts, retry_interval, failure_ts, "
            f"last_successful_stream_ordering FROM destinations WHERE destination = {mark}",
            (args[0],),
        )
        row = cur.fetchone()
        keys = ["destination", "retry_last_ts", "retry_interval", "failure_ts", "last_successful_stream_ordering"]
        print(json.dumps(dict(zip(keys, row)) if row else None))
    else:
        sys.exit(__doc__)
    conn.close()


if __name__ == "__main__":
    main()
