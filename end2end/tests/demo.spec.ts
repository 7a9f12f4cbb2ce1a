// `herald demo` as a new user meets it, in Chromium: the printed login
// works; the live homeservers on 127.0.0.1 show up in the console, some
// delivered to and some failing and backing off; the rejecting one's page
// shows the sender waiting on it, and a reset makes Herald try it again
// within a second (the page shows the new try). Within a minute of the
// start, each simulated homeserver that fails in its own way (401, refused,
// a certificate for another name, past the client timeout) is in backoff,
// and the healthy ones are delivered to (Synapse's admin API, polled).
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { freePort } from "../global-setup";
import { test, expect, hydrated } from "./fixtures";

const ROOT = path.resolve(__dirname, "../..");

type Demo = {
  url: string;
  password: string;
  rejecting: string;
  /** The banner's simulated homeservers: name → what it does. */
  homeservers: Map<string, string>;
  startedAt: number;
  process: ChildProcess;
  dir: string;
};
let demo: Demo | undefined;

test.describe.configure({ mode: "serial" });

test.beforeAll(async () => {
  const bin = process.env.HERALD_BIN ?? path.join(ROOT, "target/release/herald");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-demo-e2e-"));
  const port = await freePort();
  const startedAt = Date.now();
  const child = spawn(bin, ["demo", "--data-dir", dir, "--listen", `127.0.0.1:${port}`], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", () => {});
  const deadline = Date.now() + 30_000;
  while (!out.includes("Press Ctrl-C")) {
    if (Date.now() > deadline) throw new Error(`herald demo printed no login:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const password = /Pass\s+(\S+)/.exec(out)?.[1];
  const url = /Open\s+(http:\/\/\S+?)\/?\s/.exec(out)?.[1];
  const rejecting = /(127\.0\.0\.1:\d+)\s+rejecting/.exec(out)?.[1];
  if (!password || !url || !rejecting) throw new Error(`unexpected demo banner:\n${out}`);
  const homeservers = new Map([...out.matchAll(/^ {2}(127\.0\.0\.1:\d+)\s+(.+)$/gm)].map((m) => [m[1], m[2]]));
  demo = { url, password, rejecting, homeservers, startedAt, process: child, dir };
});

test.afterAll(async () => {
  demo?.process.kill("SIGINT");
  if (demo) fs.rmSync(demo.dir, { recursive: true, force: true });
});

test("within a minute each failing homeserver is in backoff, the healthy ones delivered to", async ({ request }) => {
  test.setTimeout(90_000);
  const d = demo!;
  const named = (prefix: string) => {
    const found = [...d.homeservers].filter(([, what]) => what.startsWith(prefix)).map(([name]) => name);
    expect(found, `homeservers that are "${prefix}…" in the banner`).not.toEqual([]);
    return found;
  };
  const failing = ["rejecting", "refusing", "wrong certificate", "timing out"].flatMap(named);
  const healthy = named("healthy");

  const login = await request.post(`${d.url}/_matrix/client/v3/login`, {
    data: { type: "m.login.password", identifier: { type: "m.id.user", user: "admin" }, password: d.password },
  });
  expect(login.status()).toBe(200);
  const token = (await login.json()).access_token as string;
  type Details = { retry_last_ts: number; retry_interval: number; last_successful_stream_ordering: number | null };
  const details = async (name: string): Promise<Details | null> => {
    const res = await request.get(
      `${d.url}/_synapse/admin/v1/federation/destinations/${encodeURIComponent(name)}`,
      { headers: { Authorization: `Bearer ${token}` } },
    );
    // 404 until Herald has queued something for it.
    if (res.status() === 404) return null;
    expect(res.status()).toBe(200);
    return res.json();
  };

  // Each failing one, once seen in backoff, stays seen; the healthy ones
  // must each have been delivered to and not be in backoff when last seen.
  const inBackoff = new Set<string>();
  const deadline = d.startedAt + 60_000;
  const waiting = () => [...failing.filter((n) => !inBackoff.has(n))];
  const undelivered = async () => {
    const left: string[] = [];
    for (const name of healthy) {
      const r = await details(name);
      if (!r || r.last_successful_stream_ordering === null || r.retry_interval !== 0) left.push(name);
    }
    return left;
  };
  for (;;) {
    for (const name of waiting()) {
      const r = await details(name);
      if (r && r.retry_last_ts > 0 && r.retry_interval > 0) inBackoff.add(name);
    }
    const left = await undelivered();
    if (waiting().length === 0 && left.length === 0) break;
    if (Date.now() > deadline) {
      const what = (n: string) => `${n} (${d.homeservers.get(n)})`;
      throw new Error(
        `a minute after the start, not in backoff: ${waiting().map(what).join(", ") || "none"}; ` +
          `healthy but not delivered to: ${left.map(what).join(", ") || "none"}`,
      );
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  expect([...inBackoff].sort()).toEqual([...failing].sort());
});

test("the demo's live homeservers fail, back off and recover; a reset retries at once", async ({ page }) => {
  test.setTimeout(90_000);
  const d = demo!;
  await page.goto(`${d.url}/login`);
  await hydrated(page);
  await page.locator("#login-user").fill("admin");
  await page.locator("#login-password").fill(d.password);
  await page.locator("#login-submit").click();
  await expect(page).toHaveURL(/\/destinations$/);

  // The simulated homeservers, filtered by their address: within seconds
  // some have been delivered to and some are backing off.
  const live = `${d.url}/destinations?destination=127.0.0.1&limit=100`;
  await expect
    .poll(
      async () => {
        await page.goto(live);
        await hydrated(page);
        await expect(page.locator("#destinations-table tbody tr").first()).toBeVisible();
        const statuses = await page.locator('#destinations-table td[data-col="status"]').evaluateAll((cells) =>
          cells.map((c) => c.getAttribute("data-value")),
        );
        const delivered = await page
          .locator('#destinations-table td[data-col="last_successful_stream_ordering"]')
          .evaluateAll((cells) => cells.filter((c) => (c.getAttribute("data-value") ?? "") !== "").length);
        // The rejecting one among those in backoff (it may not have been
        // sent anything yet in the first seconds).
        const rejecting = await page
          .locator(`#destinations-table tr[data-destination="${d.rejecting}"]`)
          .getAttribute("data-status", { timeout: 100 })
          .catch(() => null);
        // (Never delivered to, its status is "never reached".)
        const inBackoff = rejecting === "backing_off" || rejecting === "never_reached";
        return statuses.some((st) => st === "backing_off" || st === "never_reached") && delivered > 0 && inBackoff;
      },
      { timeout: 30_000, intervals: [1000] },
    )
    .toBe(true);

  // The rejecting one: in backoff, the sender waiting on it with data queued.
  await page.locator(`a[href="/destinations/${encodeURIComponent(d.rejecting)}"]`).click();
  await hydrated(page);
  const status = page.locator('#destination-details td[data-col="status"]');
  await expect(status).toHaveAttribute("data-value", /backing_off|never_reached/);
  await expect(page.locator("#destination-queue")).toHaveAttribute("data-state", /backing_off|catching_up/);

  // Reset: Herald tries it again at once; it fails again (401), and the
  // page, looking again after the reset, shows that new try.
  const lastTry = page.locator('#destination-details td[data-col="retry_last_ts"]');
  const before = Number(await lastTry.getAttribute("data-value"));
  expect(before).toBeGreaterThan(0);
  await page.locator("#reset-connection").click();
  const resetAt = Date.now();
  await page.locator("#reset-confirm").click();
  await expect(page.locator("#reset-result")).toContainText("Connection reset");
  await expect
    .poll(async () => Number((await lastTry.getAttribute("data-value")) ?? 0), { timeout: 5_000 })
    .toBeGreaterThanOrEqual(Math.max(resetAt, before + 1));
  await expect(status).toHaveAttribute("data-value", /backing_off|never_reached/);
});
