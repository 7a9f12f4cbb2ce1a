// Starts the release binary on a fresh database in a temporary directory:
// two accounts (an admin and a plain user), a few known destinations, and a
// free port on 127.0.0.1. Returns the teardown that stops it.
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { ADMIN, ALICE, DESTINATIONS } from "./tests/seed";

const ROOT = path.resolve(__dirname, "..");

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export default async function globalSetup() {
  const bin = process.env.HERALD_BIN ?? path.join(ROOT, "target/release/herald");
  if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: run \`make release\` first`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-e2e-"));
  const db = path.join(dir, "herald.db");

  for (const [who, admin] of [[ADMIN, true], [ALICE, false]] as const) {
    const args = ["user", "add", who.user, "--password", "-", "--database", db];
    if (admin) args.push("--admin");
    execFileSync(bin, args, { input: who.password + "\n", stdio: ["pipe", "inherit", "inherit"] });
  }

  // The table exists once `user add` has migrated the database.
  execFileSync(
    "python3",
    [
      "-c",
      `import json, sqlite3, sys
rows = json.load(sys.stdin)
db = sqlite3.connect(sys.argv[1])
db.executemany(
    "INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts,"
    " last_successful_stream_ordering) VALUES (?, ?, ?, ?, ?)",
    [(r["destination"], r["retry_last_ts"], r["retry_interval"], r["failure_ts"],
      r["last_successful_stream_ordering"]) for r in rows])
db.commit()`,
      db,
    ],
    { input: JSON.stringify(DESTINATIONS), stdio: ["pipe", "inherit", "inherit"] },
  );

  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const log = fs.openSync(path.join(dir, "server.log"), "a");
  const server = spawn(bin, ["serve", "--database", db, "--listen", `127.0.0.1:${port}`], {
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
  process.env.HERALD_URL = url;

  return async () => {
    server.kill("SIGTERM");
    await new Promise((r) => (server.exitCode !== null ? r(null) : server.once("exit", r)));
    if (process.env.HERALD_E2E_KEEP) {
      console.log(`kept ${dir}`);
    } else {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
}
