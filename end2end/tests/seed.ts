// The accounts and destination rows global-setup.ts puts in the database,
// and that the tests expect to see.

export const ADMIN = { user: "admin", password: "e2e-admin-password-7Qx" };
export const ALICE = { user: "alice", password: "e2e-alice-password-3Lm" };

export type Row = {
  destination: string;
  retry_last_ts: number | null;
  retry_interval: number | null;
  failure_ts: number | null;
  last_successful_stream_ordering: number | null;
};

export const DESTINATIONS: Row[] = [
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
];

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
