// The sender page (/sender) against `herald demo`, whose event generator
// hands Herald about 3 events a second through the intake API and whose
// simulated homeservers on 127.0.0.1 accept or refuse them: reached from the
// top bar, it shows real rates and queues that change as it refreshes
// itself, the rejecting server among the most queued with a link to its
// page, under the strict CSP (any violation is a console error the fixture
// fails on) and with no WCAG 2 A/AA violation found by axe-core, in light
// and dark.
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import AxeBuilder from "@axe-core/playwright";
import { freePort } from "../global-setup";
import { test, expect, hydrated } from "./fixtures";

const ROOT = path.resolve(__dirname, "../..");

type Demo = { url: string; password: string; rejecting: string; process: ChildProcess; dir: string };
let demo: Demo | undefined;

test.describe.configure({ mode: "serial" });

test.beforeAll(async () => {
  const bin = process.env.HERALD_BIN ?? path.join(ROOT, "target/release/herald");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-sender-e2e-"));
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

/** A figure's text, as a number (thousands separators dropped). */
async function figure(page: import("@playwright/test").Page, key: string): Promise<number> {
  const text = await page.locator(`#sender-figures [data-figure="${key}"] dd`).textContent();
  return Number((text ?? "").replace(/,/g, ""));
}

test("the sender page shows live rates, queues and the most queued, and refreshes", async ({ page }) => {
  test.setTimeout(90_000);
  const d = demo!;
  await page.goto(`${d.url}/login`);
  await hydrated(page);
  await page.locator("#login-user").fill("admin");
  await page.locator("#login-password").fill(d.password);
  await page.locator("#login-submit").click();
  await expect(page).toHaveURL(/\/destinations$/);

  await page.locator('#top-bar a[href="/sender"]').click();
  await expect(page).toHaveURL(/\/sender$/);
  await expect(page).toHaveTitle("Sender · Herald");
  await expect(page.locator("#sender-figures")).toBeVisible();

  // Delivered transactions and PDUs show as rates, and the chart draws them.
  await expect
    .poll(async () => (await figure(page, "pdus_per_sec")) > 0 && (await figure(page, "transactions_per_sec")) > 0, {
      timeout: 30_000,
      intervals: [500],
    })
    .toBe(true);
  await expect(page.locator("#sender-chart polyline.line-p")).toHaveAttribute("points", /\d+,\d+ \d+,\d+/);
  await expect(page.locator("#sender-chart svg")).toHaveAttribute("aria-label", /PDUs per second/);

  // The rejecting server keeps what it is sent: it is among the most
  // queued, waiting for its backoff, and the queue grows as the page
  // refreshes itself (every 5 s, no reload).
  const row = page.locator(`#sender-top tr[data-destination="${d.rejecting}"]`);
  await expect(row).toBeVisible({ timeout: 30_000 });
  await expect(row.locator("td[data-state]")).toHaveAttribute("data-state", /backing_off|catching_up|sending/);
  const queued = await figure(page, "queued_pdus");
  expect(queued).toBeGreaterThan(0);
  expect(await figure(page, "backing_off")).toBeGreaterThan(0);
  await expect(page.locator('#sender-figures [data-figure="oldest_undelivered"] dd')).toHaveText(/\d+ (ms|s|min)/);
  await expect.poll(() => figure(page, "queued_pdus"), { timeout: 20_000, intervals: [1000] }).not.toBe(queued);

  // Its name links to its page.
  await row.locator("a").click();
  await expect(page).toHaveURL(new RegExp(`/destinations/${encodeURIComponent(d.rejecting)}$`));
  await hydrated(page);
  await expect(page.locator("#destination-name")).toHaveText(d.rejecting);
});

for (const colorScheme of ["light", "dark"] as const) {
  test(`the sender page has no WCAG 2 A/AA violation (${colorScheme})`, async ({ page }) => {
    test.setTimeout(60_000);
    const d = demo!;
    await page.emulateMedia({ colorScheme });
    await page.goto(`${d.url}/login`);
    await hydrated(page);
    await page.locator("#login-user").fill("admin");
    await page.locator("#login-password").fill(d.password);
    await page.locator("#login-submit").click();
    await expect(page).toHaveURL(/\/destinations$/);
    await page.goto(`${d.url}/sender`);
    await hydrated(page);
    await expect(page.locator("#sender-top tbody tr a").first()).toBeVisible({ timeout: 30_000 });
    const results = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
    expect(results.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`)).toEqual([]);
  });
}
