// What each console page costs to load, cold (an empty cache, as a new
// visitor or a new release meets it), measured by the browser: the bytes on
// the wire (Resource Timing's encodedBodySize: gzip where the server sends
// it) of the document, the JS glue, the WASM module, the CSS, the API answers
// the page asked for, and anything else. The console is one WASM module for
// every page, so what the first page loads is the same on every page but for
// its document and its data. Budget (issue 12): the document, JS, WASM and
// CSS of the first page at most 250 KB (250,000 bytes). The table is printed
// at the end of the run; `make size` gives the same files' gzip -9 sizes.
import type { Page } from "@playwright/test";
import { expect, hydrated, test, TOKEN_KEY } from "./fixtures";
import { PAGES } from "./pages";
import { ADMIN } from "./seed";

const BUDGET = 250_000;
const KINDS = ["document", "js", "wasm", "css", "api", "other"] as const;
type Kind = (typeof KINDS)[number];
type Cost = Record<Kind, number>;

const costs: { name: string; path: string; cost: Cost }[] = [];

function kindOf(url: string, entryType: string): Kind {
  if (entryType === "navigation") return "document";
  const { pathname } = new URL(url);
  if (pathname.endsWith(".wasm")) return "wasm";
  if (pathname.endsWith(".js")) return "js";
  if (pathname.endsWith(".css")) return "css";
  if (/^\/_(matrix|synapse|herald)\//.test(pathname)) return "api";
  return "other";
}

/** The bytes of every same-origin response the page has loaded, by kind. */
async function measure(page: Page): Promise<Cost> {
  const entries = await page.evaluate(() =>
    [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")].map((e) => {
      const r = e as PerformanceResourceTiming;
      return { url: r.name, type: r.entryType, bytes: r.encodedBodySize };
    }),
  );
  const cost = Object.fromEntries(KINDS.map((k) => [k, 0])) as Cost;
  for (const e of entries) cost[kindOf(e.url, e.type)] += e.bytes;
  return cost;
}

test.describe.configure({ mode: "serial" });

for (const p of PAGES) {
  test(`${p.name} (${p.path}) loads within the budget`, async ({ page, request, expectHttpError }) => {
    for (const [method, path, status] of p.httpErrors ?? []) expectHttpError(method, path, status);
    // Each test has its own browser context: the cache starts empty. A
    // signed-in page gets the session the console keeps in localStorage,
    // so that nothing is loaded before the page itself.
    if (p.signedIn ?? true) {
      const login = await request.post("/_matrix/client/v3/login", {
        data: { type: "m.login.password", identifier: { type: "m.id.user", user: ADMIN.user }, password: ADMIN.password },
      });
      expect(login.status()).toBe(200);
      const { access_token, user_id } = await login.json();
      await page.addInitScript(
        ([key, token, user]) => {
          localStorage.setItem(key, token);
          localStorage.setItem("herald.user_id", user);
        },
        [TOKEN_KEY, access_token, user_id],
      );
    }
    await page.goto(p.path);
    await hydrated(page);
    await p.prepare?.(page);
    const cost = await measure(page);
    costs.push({ name: p.name, path: p.path, cost });
    expect(cost.wasm, "the WASM module was loaded").toBeGreaterThan(0);
    const first = cost.document + cost.js + cost.wasm + cost.css;
    expect(first, `document + JS + WASM + CSS of ${p.path}`).toBeLessThanOrEqual(BUDGET);
  });
}

test.afterAll(() => {
  const kb = (n: number) => (n / 1000).toFixed(1).padStart(7);
  const lines = [
    `${"page".padEnd(48)} ${KINDS.map((k) => k.padStart(7)).join(" ")}  first load (doc+js+wasm+css), kB`,
  ];
  for (const { name, path, cost } of costs) {
    const first = cost.document + cost.js + cost.wasm + cost.css;
    lines.push(`${`${name} (${path})`.slice(0, 48).padEnd(48)} ${KINDS.map((k) => kb(cost[k])).join(" ")}  ${kb(first)}`);
  }
  console.log(lines.join("\n"));
});
