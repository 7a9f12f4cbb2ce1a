// Two Herald instances, "alpha" and "beta", sharing one database in a
// throwaway PostgreSQL cluster (scripts/pg-cluster.sh): an admin account
// made with `herald user add --database postgresql://…`, one signing key,
// each its own console port. Sets HERALD_URL (alpha's console, which the
// spec uses) and HERALD_BETA_PID (the process the spec kills); the teardown
// stops what is left and removes the cluster.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { freePort } from "../global-setup";
import { ADMIN } from "../tests/seed";

const ROOT = path.resolve(__dirname, "../..");
const CLUSTER = path.join(ROOT, "scripts/pg-cluster.sh");

/** `herald serve` as `name` on `database`, once its console answers. */
async function serve(bin: string, dir: string, name: string, database: string) {
  const port = await freePort();
  const config = path.join(dir, `${name}.toml`);
  fs.writeFileSync(
    config,
    `server_name = "instances.test"
instance_name = "${name}"
database = "${database}"
signing_key_path = "${path.join(dir, "instances.test.signing.key")}"
listen = "127.0.0.1:${port}"
` +
      ["address", "account"].map((l) => `[rc_login.${l}]\nper_second = 1000\nburst_count = 1000\n`).join(""),
  );
  const logPath = path.join(dir, `${name}.log`);
  const log = fs.openSync(logPath, "a");
  const child = spawn(bin, ["serve", "--config", config], {
    stdio: ["ignore", log, log],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" },
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${name} exited:\n${fs.readFileSync(logPath, "utf8")}`);
    }
    try {
      if ((await fetch(`${url}/_matrix/client/versions`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${name} did not answer within 30 s:\n${fs.readFileSync(logPath, "utf8")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, child };
}

/** SIGTERM, then SIGKILL if it has not exited within 10 s. */
async function stop(child: ChildProcess) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

export default async function instancesSetup() {
  const bin = process.env.HERALD_BIN ?? path.join(ROOT, "target/release/herald");
  if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: run \`make release\` first`);
  const cluster = execFileSync(CLUSTER, ["start"], { encoding: "utf8" }).trim();
  const port = cluster.split(":").pop();
  const database = `postgresql://herald@127.0.0.1:${port}/postgres`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-instances-e2e-"));
  const started: ChildProcess[] = [];
  try {
    execFileSync(bin, ["user", "add", ADMIN.user, "--admin", "--password", "-", "--database", database], {
      input: ADMIN.password + "\n",
      stdio: ["pipe", "inherit", "inherit"],
    });
    const alpha = await serve(bin, dir, "alpha", database);
    started.push(alpha.child);
    const beta = await serve(bin, dir, "beta", database);
    started.push(beta.child);
    process.env.HERALD_URL = alpha.url;
    process.env.HERALD_BETA_PID = String(beta.child.pid);
  } catch (e) {
    for (const c of started) await stop(c);
    execFileSync(CLUSTER, ["stop", cluster]);
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return async () => {
    for (const c of started) await stop(c);
    execFileSync(CLUSTER, ["stop", cluster]);
    if (process.env.HERALD_E2E_KEEP) {
      console.log(`kept ${dir}`);
    } else {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
}
