// Accessibility: axe-core (WCAG 2.0 and 2.1, levels A and AA) finds no
// violation on any console page, in the light and the dark theme (the
// console follows `prefers-color-scheme`, emulated here), once the page has
// hydrated and shows its data. A failure lists each violation with the rule,
// its help text and URL, and the nodes it found (selector and why).
//
// A new page is one line in PAGES (and, if it needs a state, a `prepare`).
import AxeBuilder from "@axe-core/playwright";
import type { Page } from "@playwright/test";
import { expect, hydrated, signIn, test } from "./fixtures";
import { NAMED, ROOMS_OF } from "./seed";

type A11yPage = {
  /** What the test is called. */
  name: string;
  /** Where it is. */
  path: string;
  /** Signed in as the admin first (the default), or signed out. */
  signedIn?: boolean;
  /** Statuses the page answers on purpose (as `expectHttpError` takes them). */
  httpErrors?: [method: string, path: string, status: number][];
  /** Waits for what the page shows once loaded, and opens what should be
   * checked open (a dialog). */
  prepare?: (page: Page) => Promise<void>;
};

const BACKING_OFF = NAMED.find((d) => (d.retry_interval ?? 0) > 0)!.destination;
const SYNAPSE_DESTINATIONS = "/_synapse/admin/v1/federation/destinations";
const HERALD_DESTINATIONS = "/_herald/admin/v1/federation/destinations";

const PAGES: A11yPage[] = [
  { name: "sign-in", path: "/login", signedIn: false, prepare: (p) => expect(p.locator("#login-user")).toBeVisible() },
  {
    name: "sign-in with an error",
    path: "/login",
    signedIn: false,
    httpErrors: [["POST", "/_matrix/client/v3/login", 403]],
    prepare: async (p) => {
      await p.locator("#login-user").fill("nobody");
      await p.locator("#login-password").fill("wrong password");
      await p.locator("#login-submit").click();
      await expect(p.locator("#login-error")).toBeVisible();
    },
  },
  { name: "home", path: "/", prepare: (p) => expect(p).toHaveURL(/\/destinations$/) },
  { name: "destinations", path: "/destinations", prepare: (p) => rowsShown(p, "#destinations-table") },
  {
    name: "destinations, bulk reset dialog",
    path: "/destinations?destination=example",
    prepare: async (p) => {
      await rowsShown(p, "#destinations-table");
      await p.locator("#destinations-table tbody tr[data-status='backing_off'] input[type='checkbox']").first().check();
      await p.locator("#bulk-reset").click();
      await expect(p.locator("#bulk-dialog")).toBeVisible();
    },
  },
  { name: "destination", path: `/destinations/${ROOMS_OF}`, prepare: (p) => rowsShown(p, "#rooms-table") },
  {
    name: "destination, reset dialog",
    path: `/destinations/${encodeURIComponent(BACKING_OFF)}`,
    prepare: async (p) => {
      await expect(p.locator("#destination-details")).toBeVisible();
      await p.locator("#reset-connection").click();
      await expect(p.locator("#reset-confirm")).toBeVisible();
    },
  },
  {
    name: "unknown destination",
    path: "/destinations/unknown.example",
    httpErrors: [
      ["GET", `${SYNAPSE_DESTINATIONS}/unknown.example`, 404],
      ["GET", `${SYNAPSE_DESTINATIONS}/unknown.example/rooms`, 404],
      ["GET", `${HERALD_DESTINATIONS}/unknown.example/queue`, 404],
    ],
    prepare: async (p) => {
      await expect(p.locator("#destination-error")).toBeVisible();
      await expect(p.locator("#rooms-error")).toBeVisible();
    },
  },
  {
    name: "404",
    path: "/no/such/page",
    httpErrors: [["GET", "/no/such/page", 404]],
    prepare: (p) => expect(p.locator("#not-found-page h1")).toBeVisible(),
  },
  // { name: "sender", path: "/sender", prepare: (p) => expect(p.locator("#sender-page")).toBeVisible() },
];

const TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

async function rowsShown(page: Page, table: string) {
  await expect(page.locator(`${table} tbody tr`).first()).toBeVisible();
}

for (const scheme of ["light", "dark"] as const) {
  test.describe(`${scheme} theme`, () => {
    for (const p of PAGES) {
      test(`${p.name} (${p.path}) has no WCAG 2 A/AA violation`, async ({ page, expectHttpError }) => {
        for (const [method, path, status] of p.httpErrors ?? []) expectHttpError(method, path, status);
        await page.emulateMedia({ colorScheme: scheme });
        if (p.signedIn ?? true) {
          await signIn(page);
          await expect(page).toHaveURL(/\/destinations$/);
        }
        await page.goto(p.path);
        await hydrated(page);
        await p.prepare?.(page);
        // The theme really is the one asked for (the body's colour follows it).
        const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
        expect(bg, "body background").toBe(scheme === "light" ? "rgb(246, 247, 249)" : "rgb(20, 23, 27)");

        const results = await new AxeBuilder({ page }).withTags(TAGS).analyze();
        expect(results.passes.length, "axe checked something").toBeGreaterThan(0);
        expect(results.violations.map(describe), readable(results.violations)).toEqual([]);
      });
    }
  });
}

type Violation = Awaited<ReturnType<AxeBuilder["analyze"]>>["violations"][number];

function describe(v: Violation) {
  return `${v.id} (${v.nodes.length} nodes)`;
}

/** Every violation with its rule, impact, help, and up to five nodes. */
function readable(violations: Violation[]) {
  const lines = [`${violations.length} axe violation(s):`];
  for (const v of violations) {
    lines.push(`- ${v.id} [${v.impact}] ${v.help} (${v.helpUrl}), ${v.nodes.length} node(s):`);
    for (const n of v.nodes.slice(0, 5)) {
      lines.push(`    ${n.target.join(" ")}: ${n.failureSummary?.replace(/\s+/g, " ") ?? ""}`);
    }
    if (v.nodes.length > 5) lines.push(`    … and ${v.nodes.length - 5} more`);
  }
  return lines.join("\n");
}
