// Starts the release binary twice, each on a fresh database in a temporary
// directory: two accounts (an admin and a plain user), known destinations
// and rooms, and a free port on 127.0.0.1. Returns the teardown that stops
// them.
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { ADMIN, ALICE, DESTINATIONS, ROOMS, SENDER_TOKEN } from "./tests/seed";

const ROOT = path.resolve(__dirname, "..");

/** A free TCP port on 127.0.0.1 (bound and released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

type Server = { url: string; stop: () => Promise<void> };

/** A database in `dir` with the accounts, destinations and rooms of seed.ts,
 * served by `bin` on a free port; `extraConfig` is added to its config. */
async function startServer(bin: string, dir: string, extraConfig = ""): Promise<Server> {
  fs.mkdirSync(dir, { recursive: true });
  const db = path.join(dir, "herald.db");

  for (const [who, admin] of [[ADMIN, true], [ALICE, false]] as const) {
    const args = ["user", "add", who.user, "--password", "-", "--database", db];
    if (admin) args.push("--admin");
    execFileSync(bin, args, { input: who.password + "\n", stdio: ["pipe", "inherit", "inherit"] });
  }

  // The tables exist once `user add` has migrated the database.
  execFileSync(
    "python3",
    [
      "-c",
      `import json, sqlite3, sys
seed = json.load(sys.stdin)
db = sqlite3.connect(sys.argv[1])
db.executemany(
    "INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts,"
    " last_successful_stream_ordering) VALUES (?, ?, ?, ?, ?)",
    [(r["destination"], r["retry_last_ts"], r["retry_interval"], r["failure_ts"],
      r["last_successful_stream_ordering"]) for r in seed["destinations"]])
db.executemany(
    "INSERT INTO destination_rooms (destination, room_id, stream_ordering) VALUES (?, ?, ?)",
    [(r["destination"], r["room_id"], r["stream_ordering"]) for r in seed["rooms"]])
db.commit()`,
      db,
    ],
    { input: JSON.stringify({ destinations: DESTINATIONS, rooms: ROOMS }), stdio: ["pipe", "inherit", "inherit"] },
  );

  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const log = fs.openSync(path.join(dir, "server.log"), "a");
  // The suite signs in dozens of times from 127.0.0.1: lift Synapse's default
  // login limits (5 logins per address and per account), which a test of
  // their own covers (server/tests/login.rs).
  const config = path.join(dir, "herald.toml");
  fs.writeFileSync(
    config,
    extraConfig +
      ["address", "account"]
        .map((limit) => `[rc_login.${limit}]\nper_second = 1000\nburst_count = 1000\n`)
        .join(""),
  );
  const server = spawn(bin, ["serve", "--config", config, "--database", db, "--listen", `127.0.0.1:${port}`], {
    stdio: ["ignore", log, log],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" },
  });
  let exited: string | null = null;
  server.on("exit", (code, signal) => (exited = `exited with ${code ?? signal}`));
  const serverLog = () => fs.readFileSync(path.join(dir, "server.log"), "utf8");

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`herald serve ${exited}:\n${serverLog()}`);
    try {
      const r = await fetch(`${url}/_matrix/client/versions`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      server.kill();
      throw new Error(`herald serve did not answer on ${url} within 30 s:\n${serverLog()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const stop = async () => {
    server.kill("SIGTERM");
    await new Promise((r) => (server.exitCode !== null ? r(null) : server.once("exit", r)));
  };
  return { url, stop };
}

/** The third server's config (put first: top-level keys, then a section): the
 * intake API, loopback destinations allowed, and a failed request recorded
 * at once (no retries inside a request), so that its tests make real
 * destinations on 127.0.0.1 fail within seconds. */
const SENDING_CONFIG = `sender_api_token = "${SENDER_TOKEN}"
ip_range_whitelist = ["127.0.0.0/8"]
[federation]
max_short_retries = 0
max_long_retries = 0
`;

/** Three servers on the same seed: HERALD_URL for the tests that only read,
 * HERALD_MUTABLE_URL for the ones that reset destinations (see
 * fixtures.ts), so that a reset never changes what another test counts,
 * and HERALD_SENDING_URL, with the intake API, for the tests that make
 * destinations fail for real (health.spec.ts). */
export default async function globalSetup() {
  const bin = process.env.HERALD_BIN ?? path.join(ROOT, "target/release/herald");
  if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: run \`make release\` first`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-e2e-"));
  const servers = [
    await startServer(bin, path.join(dir, "read")),
    await startServer(bin, path.join(dir, "mutable")),
    await startServer(bin, path.join(dir, "sending"), SENDING_CONFIG),
  ];
  process.env.HERALD_URL = servers[0].url;
  process.env.HERALD_MUTABLE_URL = servers[1].url;
  process.env.HERALD_SENDING_URL = servers[2].url;

  return async () => {
    for (const s of servers) await s.stop();
    if (process.env.HERALD_E2E_KEEP) {
      console.log(`kept ${dir}`);
    } else {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
}
