// How long the console takes to show new rows when the admin changes page,
// sort, page size or filter, on a large database, in Debian's Chromium.
//
//   make bench-console            (seeds /tmp/herald-bench.db with 1M rows once)
//   node bench/page-change.mjs --db FILE --user NAME --password PW [--bin PATH] [--samples N]
//
// Starts `herald serve` on the database on a free 127.0.0.1 port, signs in
// through the form, and times each change inside the page: from the click
// (or, for the filter, from the navigation the debounced filter makes — the
// 300 ms pause after typing is by design and not counted) until the new
// table is in the document, and until the next animation frame after it
// (the rows drawn). Every sample checks that rows arrived and that the URL
// says what was asked. Prints medians and 95th percentiles.
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import * as os from "node:os";
import { chromium } from "@playwright/test";

const args = Object.fromEntries(
  process.argv
    .slice(2)
    .join(" ")
    .split("--")
    .filter(Boolean)
    .map((a) => a.trim().split(/\s+(.*)/s).slice(0, 2)),
);
const bin = path.resolve(args.bin ?? path.join(import.meta.dirname, "../../target/release/herald"));
const db = args.db;
const samples = Number(args.samples ?? 15);
if (!db || !args.user || !args.password) {
  console.error("usage: node bench/page-change.mjs --db FILE --user NAME --password PW [--bin PATH] [--samples N]");
  process.exit(2);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const logFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "herald-bench-")), "server.log");
const log = fs.openSync(logFile, "a");
const started = Date.now();
const server = spawn(bin, ["serve", "--database", db, "--listen", `127.0.0.1:${port}`], {
  stdio: ["ignore", log, log],
});
let exited = null;
server.on("exit", (code, signal) => (exited = `${code ?? signal}`));
const stop = () => server.exitCode === null && server.kill("SIGTERM");
process.on("exit", stop);

for (const deadline = Date.now() + 180_000; ; ) {
  if (exited !== null) throw new Error(`herald serve exited (${exited}); see ${logFile}`);
  try {
    if ((await fetch(`${url}/_matrix/client/versions`)).ok) break;
  } catch {
    // not listening yet
  }
  if (Date.now() > deadline) throw new Error(`herald serve did not answer within 180 s; see ${logFile}`);
  await new Promise((r) => setTimeout(r, 200));
}
console.log(`server ready after ${((Date.now() - started) / 1000).toFixed(1)} s (index load included)`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 1920, height: 1080 } });
page.on("pageerror", (e) => {
  throw e;
});
await page.goto(`${url}/login`);
await page.locator("body[data-hydrated=true]").waitFor();
await page.locator("#login-user").fill(args.user);
await page.locator("#login-password").fill(args.password);
await page.locator("#login-submit").click();
await page.waitForURL(/\/destinations$/);
await page.locator("#destinations-table tbody tr").first().waitFor({ timeout: 60_000 });
const total = Number(await page.locator("#destinations-total").getAttribute("data-total"));
console.log(`${total.toLocaleString("en")} destinations`);

/** Runs `act` in the page and times the table's replacement. */
async function timed(act, arg) {
  return page.evaluate(
    async ([act, arg]) => {
      const region = document.querySelector("#destinations-list");
      const old = document.querySelector("#destinations-table");
      let navigated = null;
      const push = history.pushState;
      history.pushState = function (...a) {
        navigated ??= performance.now();
        return push.apply(this, a);
      };
      const inserted = new Promise((resolve) => {
        const obs = new MutationObserver(() => {
          const t = document.querySelector("#destinations-table");
          if (t && t !== old) {
            obs.disconnect();
            resolve(performance.now());
          }
        });
        obs.observe(region, { childList: true, subtree: true });
      });
      const start = performance.now();
      if (act === "click") {
        document.querySelector(arg).click();
      } else if (act === "select") {
        const s = document.querySelector("#page-size");
        s.value = arg;
        s.dispatchEvent(new Event("change", { bubbles: true }));
      } else {
        const f = document.querySelector("#destinations-filter");
        f.value = arg;
        f.dispatchEvent(new Event("input", { bubbles: true }));
      }
      const at = await Promise.race([inserted, new Promise((r) => setTimeout(() => r(null), 20_000))]);
      history.pushState = push;
      if (at === null) return { error: "no new table within 20 s" };
      await new Promise((r) => requestAnimationFrame(() => r()));
      const drawn = performance.now();
      const from = act === "filter" ? navigated : start;
      return {
        inDom: at - from,
        drawn: drawn - from,
        rows: document.querySelectorAll("#destinations-table tbody tr[data-destination]").length,
        search: location.search,
      };
    },
    [act, arg],
  );
}

const filters = ["matrix", "chat", "quokka", "xqzjvw", "org", "server", "hs", "ex"];
const cases = [
  ["next page", (i) => ["click", "#page-next"], (r) => /from=\d+/.test(r.search) && r.rows > 0],
  [
    "sort",
    (i) => ["click", `button[data-sort="${["retry_last_ts", "failure_ts", "retry_interval", "destination"][i % 4]}"]`],
    (r) => r.rows > 0,
  ],
  ["page size", (i) => ["select", ["25", "500", "50", "100"][i % 4]], (r) => /limit=|^$/.test(r.search) && r.rows > 0],
  ["filter", (i) => ["filter", filters[i % filters.length]], (r) => /destination=/.test(r.search)],
];

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

const results = [];
for (const [name, action, ok] of cases) {
  await page.goto(`${url}/destinations`);
  await page.locator("#destinations-table tbody tr").first().waitFor({ timeout: 60_000 });
  const inDom = [];
  const drawn = [];
  for (let i = 0; i < samples; i++) {
    const r = await timed(...action(i));
    if (r.error || !ok(r)) throw new Error(`${name} sample ${i}: ${JSON.stringify(r)}`);
    inDom.push(r.inDom);
    drawn.push(r.drawn);
  }
  inDom.sort((a, b) => a - b);
  drawn.sort((a, b) => a - b);
  results.push({
    case: name,
    "median in DOM (ms)": quantile(inDom, 0.5).toFixed(1),
    "median drawn (ms)": quantile(drawn, 0.5).toFixed(1),
    "p95 drawn (ms)": quantile(drawn, 0.95).toFixed(1),
    "max drawn (ms)": drawn[drawn.length - 1].toFixed(1),
  });
  console.log(JSON.stringify(results[results.length - 1]));
}
console.table(results);
console.log(`${samples} samples per case; ${os.cpus().length} × ${os.cpus()[0].model}; load ${os.loadavg()[0].toFixed(2)}`);
await browser.close();
stop();
