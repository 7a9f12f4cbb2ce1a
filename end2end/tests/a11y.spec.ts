// Accessibility: axe-core (WCAG 2.0 and 2.1, levels A and AA) finds no
// violation on any console page, in the light and the dark theme (the
// console follows `prefers-color-scheme`, emulated here), once the page has
// hydrated and shows its data. A failure lists each violation with the rule,
// its help text and URL, and the nodes it found (selector and why).
//
// The pages are those of pages.ts: a new page is one line there.
//
// axe is injected with Playwright's `evaluate` (the DevTools protocol), which
// the console's strict CSP (server/src/http/security.rs) does not govern, so
// this spec needs no `bypassCSP` and checks the pages as served.
import AxeBuilder from "@axe-core/playwright";
import { expect, hydrated, signIn, test } from "./fixtures";
import { PAGES } from "./pages";

const TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

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
