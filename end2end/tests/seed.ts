// The accounts and destination rows global-setup.ts puts in the database,
// and that the tests expect to see.

export const ADMIN = { user: "admin", password: "e2e-admin-password-7Qx" };
export const ALICE = { user: "alice", password: "e2e-alice-password-3Lm" };
/** The intake API's token on the "sending" server (global-setup.ts). */
export const SENDER_TOKEN = "e2e-sender-token-9Kd";

export type Row = {
  destination: string;
  retry_last_ts: number | null;
  retry_interval: number | null;
  failure_ts: number | null;
  last_successful_stream_ordering: number | null;
};

/** "Now" for the seed, the same in every process of a run: the start of
 * the current UTC day, fixed by the first process that loads this file (the
 * runner, before global-setup and the workers) and handed down to the
 * workers in HERALD_E2E_SEED_DAY; rounding to the day keeps the processes
 * in agreement even if that variable did not reach one of them. */
const DAY_MS = 86_400_000;
export const SEED_DAY: number = (() => {
  const inherited = Number(process.env.HERALD_E2E_SEED_DAY);
  if (Number.isSafeInteger(inherited) && inherited > 0) return inherited;
  const day = Math.floor(Date.now() / DAY_MS) * DAY_MS;
  process.env.HERALD_E2E_SEED_DAY = String(day);
  return day;
})();

/** The hand-written rows, one or more per status. */
export const NAMED: Row[] = [
  {
    destination: "matrix.example.org",
    retry_last_ts: null,
    retry_interval: null,
    failure_ts: null,
    last_successful_stream_ordering: 1024,
  },
  {
    destination: "down.example.net",
    retry_last_ts: 1_700_000_000_000,
    retry_interval: 3_600_000,
    failure_ts: 1_699_990_000_000,
    last_successful_stream_ordering: 7,
  },
  {
    destination: "[2001:db8::1]:8448",
    retry_last_ts: 1_700_000_500_000,
    retry_interval: 600_000,
    failure_ts: 1_700_000_400_000,
    last_successful_stream_ordering: null,
  },
  {
    destination: "new.example.com",
    retry_last_ts: 0,
    retry_interval: 0,
    failure_ts: null,
    last_successful_stream_ordering: null,
  },
  {
    // Last tried yesterday with a ten-year interval: backing off for years
    // whenever the tests run (dated from today, so the seed never expires).
    destination: "slow.example.org",
    retry_last_ts: SEED_DAY - DAY_MS,
    retry_interval: 315_360_000_000,
    failure_ts: SEED_DAY - DAY_MS - 1_000_000_000,
    last_successful_stream_ordering: 5,
  },
];

/** Enough healthy rows to need more than one page of 25. */
export const PEERS: Row[] = Array.from({ length: 26 }, (_, i) => ({
  destination: `peer-${String(i).padStart(2, "0")}.example.org`,
  retry_last_ts: null,
  retry_interval: null,
  failure_ts: i % 2 ? 1_600_000_000_000 + i * 1000 : null,
  last_successful_stream_ordering: 100 + i,
}));

export const DESTINATIONS: Row[] = [...NAMED, ...PEERS];

/** The status the console derives for a row (shared/src/status.rs), at any
 * time of the run (the seed's fixed rows date from 2023; slow.example.org's
 * backoff ends ten years after SEED_DAY). */
export function statusOf(row: Row): string {
  const inBackoff = (row.retry_last_ts ?? 0) !== 0;
  const next = (row.retry_last_ts ?? 0) + (row.retry_interval ?? 0);
  if (!inBackoff) {
    return row.last_successful_stream_ordering === null && row.failure_ts === null ? "unknown" : "healthy";
  }
  if (row.last_successful_stream_ordering === null) return "never_reached";
  return next > Date.now() ? "backing_off" : "retry_due";
}

/** Byte order of two names (all ASCII here). */
function cmpName(a: string, b: string) {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The destination names in the server's order: `ORDER BY <column> <dir>,
 * destination ASC`, NULL first ascending and last descending. */
export function orderedNames(column: keyof Row, dir: "f" | "b" = "f"): string[] {
  const sign = dir === "f" ? 1 : -1;
  return [...DESTINATIONS]
    .sort((x, y) => {
      const a = x[column];
      const b = y[column];
      let c = 0;
      if (column === "destination") c = cmpName(a as string, b as string);
      else if (a === null && b !== null) c = -1;
      else if (a !== null && b === null) c = 1;
      else if (a !== null && b !== null) c = (a as number) - (b as number);
      return sign * c || cmpName(x.destination, y.destination);
    })
    .map((r) => r.destination);
}

/** What the API (and so the table) shows for a row: Synapse's 0 for a NULL
 * `retry_last_ts`/`retry_interval`, null stays null for the other two. */
export function shown(row: Row) {
  return {
    destination: row.destination,
    retry_last_ts: String(row.retry_last_ts ?? 0),
    retry_interval: String(row.retry_interval ?? 0),
    failure_ts: row.failure_ts === null ? "" : String(row.failure_ts),
    last_successful_stream_ordering:
      row.last_successful_stream_ordering === null ? "" : String(row.last_successful_stream_ordering),
  };
}

export type Room = { destination: string; room_id: string; stream_ordering: number };

/** The rooms of down.example.net: more than one page of 25. */
export const ROOMS_OF = "down.example.net";
export const ROOMS: Room[] = Array.from({ length: 30 }, (_, i) => ({
  destination: ROOMS_OF,
  room_id: `!room-${String(i).padStart(2, "0")}:example.org`,
  stream_ordering: 1000 + i,
}));

/** The room ids in the server's order (`ORDER BY room_id`). */
export function orderedRooms(dir: "f" | "b" = "f"): string[] {
  const ids = ROOMS.map((r) => r.room_id).sort();
  return dir === "f" ? ids : ids.reverse();
}
