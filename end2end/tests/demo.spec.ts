// `herald demo` as a new user meets it, in Chromium: the printed login
// works; the live homeservers on 127.0.0.1 show up in the console, some
// delivered to and some failing and backing off; the rejecting one's page
// shows the sender waiting on it, and a reset makes Herald try it again
// within a second (the page shows the new try).
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { freePort } from "../global-setup";
import { test, expect, hydrated } from "./fixtures";

const ROOT = path.resolve(__dirname, "../..");

type Demo = { url: string; password: string; rejecting: string; process: ChildProcess; dir: string };
let demo: Demo | undefined;

test.describe.configure({ mode: "serial" });

test.beforeAll(async () => {
  const bin = process.env.HERALD_BIN ?? path.join(ROOT, "target/release/herald");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-demo-e2e-"));
  const port = await freePort();
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
  demo = { url, password, rejecting, process: child, dir };
});

test.afterAll(async () => {
  demo?.process.kill("SIGINT");
  if (demo) fs.rmSync(demo.dir, { recursive: true, force: true });
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
