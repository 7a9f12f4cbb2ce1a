// The destinations page against the seeded rows: health summary, status
// badges, server-side sorting, the filter, paging, and the page state kept in
// the URL across reloads and history.
import type { Page } from "@playwright/test";
import { DESTINATIONS, NAMED, orderedNames, statusOf } from "./seed";
import { expect, hydrated, signIn, test } from "./fixtures";

const ROWS = "#destinations-table tbody tr";
const LABELS: Record<string, string> = {
  healthy: "healthy",
  backing_off: "backing off",
  retry_due: "retry due",
  never_reached: "never reached",
  unknown: "unknown",
};
const TOTAL = DESTINATIONS.length;

async function names(page: Page) {
  return page.locator(ROWS).evaluateAll((trs) => trs.map((tr) => tr.getAttribute("data-destination")));
}

async function signedInAt(page: Page, url: string) {
  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await page.goto(url);
  await hydrated(page);
}

test("the summary counts destinations per status", async ({ page }) => {
  await signIn(page);
  const counts: Record<string, number> = { healthy: 0, backing_off: 0, retry_due: 0, never_reached: 0, unknown: 0 };
  for (const row of DESTINATIONS) counts[statusOf(row)]++;
  await expect(page.locator("#summary-total")).toHaveAttribute("data-count", String(TOTAL));
  await expect(page.locator("#summary-total")).toHaveText(`${TOTAL} destinations`);
  for (const [status, n] of Object.entries(counts)) {
    const item = page.locator(`#health-summary li[data-status="${status}"]`);
    await expect(item, status).toHaveAttribute("data-count", String(n));
    await expect(item, status).toContainText(LABELS[status]);
  }
  // One bar segment per status present.
  await expect(page.locator("#summary-bar rect")).toHaveCount(Object.values(counts).filter((n) => n > 0).length);
});

test("every row shows its status, next retry and times", async ({ page }) => {
  await signIn(page);
  await expect(page.locator(ROWS)).toHaveCount(TOTAL);
  for (const row of NAMED) {
    const tr = page.locator(`${ROWS}[data-destination="${row.destination}"]`);
    await expect(tr, row.destination).toHaveAttribute("data-status", statusOf(row));
    await expect(tr.locator(".badge"), row.destination).toHaveText(LABELS[statusOf(row)]);
  }
  const cell = (name: string, col: string) => page.locator(`${ROWS}[data-destination="${name}"] [data-col="${col}"]`);
  await expect(cell("down.example.net", "next_retry")).toHaveText("due now");
  await expect(cell("down.example.net", "next_retry")).toHaveAttribute("title", "2023-11-14 23:13:20 UTC");
  await expect(cell("slow.example.org", "next_retry")).toHaveText(/^in \d+ d$/);
  await expect(cell("slow.example.org", "retry_interval")).toHaveText("3650 d");
  await expect(cell("[2001:db8::1]:8448", "retry_interval")).toHaveText("10 min");
  await expect(cell("matrix.example.org", "next_retry")).toHaveText("—");
  await expect(cell("down.example.net", "failure_ts")).toHaveText(/^\d+ d ago$/);
  await expect(cell("down.example.net", "failure_ts")).toHaveAttribute("title", "2023-11-14 19:26:40 UTC");
});

test("clicking a header sorts by it, then the other way", async ({ page }) => {
  await signIn(page);
  await expect.poll(() => names(page)).toEqual(orderedNames("destination"));
  await expect(page.locator('thead th[data-col="destination"]')).toHaveAttribute("aria-sort", "ascending");

  await page.locator('button[data-sort="retry_last_ts"]').click();
  await expect(page).toHaveURL(/\/destinations\?order_by=retry_last_ts$/);
  await expect.poll(() => names(page)).toEqual(orderedNames("retry_last_ts"));
  await expect(page.locator('thead th[data-col="retry_last_ts"]')).toHaveAttribute("aria-sort", "ascending");
  await expect(page.locator('thead th[data-col="destination"]')).not.toHaveAttribute("aria-sort");

  // The header buttons work from the keyboard too.
  await page.locator('button[data-sort="retry_last_ts"]').focus();
  await page.keyboard.press("Enter");
  await expect(page).toHaveURL(/\/destinations\?order_by=retry_last_ts&dir=b$/);
  await expect.poll(() => names(page)).toEqual(orderedNames("retry_last_ts", "b"));
  await expect(page.locator('thead th[data-col="retry_last_ts"]')).toHaveAttribute("aria-sort", "descending");
  // The redrawn header keeps the keyboard focus.
  await expect(page.locator('button[data-sort="retry_last_ts"]')).toBeFocused();

  // The other sortable columns, each both ways.
  for (const col of ["retry_interval", "failure_ts", "last_successful_stream_ordering"] as const) {
    await page.locator(`button[data-sort="${col}"]`).click();
    await expect(page).toHaveURL(new RegExp(`order_by=${col}$`));
    await expect.poll(() => names(page), col).toEqual(orderedNames(col));
    await page.locator(`button[data-sort="${col}"]`).click();
    await expect(page).toHaveURL(new RegExp(`order_by=${col}&dir=b$`));
    await expect.poll(() => names(page), `${col} descending`).toEqual(orderedNames(col, "b"));
    await expect(page.locator(`thead th[data-col="${col}"]`)).toHaveAttribute("aria-sort", "descending");
  }
});

test("the filter narrows the list as the admin types", async ({ page }) => {
  await signIn(page);
  await expect(page.locator(ROWS)).toHaveCount(TOTAL);
  await page.locator("#destinations-filter").fill("PEER-1");
  await expect(page).toHaveURL(/\/destinations\?destination=PEER-1$/);
  const tens = orderedNames("destination").filter((n) => n.startsWith("peer-1"));
  await expect.poll(() => names(page)).toEqual(tens);
  await expect(page.locator("#destinations-total")).toHaveText(`1–${tens.length} of ${tens.length}`);

  await page.locator("#destinations-filter").fill("no-such-host");
  await expect(page.locator("#destinations-empty")).toHaveText("No destinations match");
  await expect(page.locator("#destinations-total")).toHaveText("0 of 0");

  await page.locator("#destinations-filter").fill("");
  await expect(page).toHaveURL(/\/destinations$/);
  await expect(page.locator(ROWS)).toHaveCount(TOTAL);
});

test("paging forward and back, and changing the page size", async ({ page }) => {
  await signedInAt(page, "/destinations?limit=25");
  const all = orderedNames("destination");
  await expect.poll(() => names(page)).toEqual(all.slice(0, 25));
  await expect(page.locator("#destinations-total")).toHaveText(`1–25 of ${TOTAL}`);
  await expect(page.locator("#page-prev")).toBeDisabled();
  await expect(page.locator("#page-first")).toBeDisabled();
  await expect(page.locator("#page-size")).toHaveValue("25");

  await page.locator("#page-next").click();
  await expect(page).toHaveURL(/\/destinations\?from=25&limit=25$/);
  await expect.poll(() => names(page)).toEqual(all.slice(25));
  await expect(page.locator("#destinations-total")).toHaveText(`26–${TOTAL} of ${TOTAL}`);
  await expect(page.locator("#page-next")).toBeDisabled();

  await page.locator("#page-prev").click();
  await expect(page).toHaveURL(/\/destinations\?limit=25$/);
  await expect.poll(() => names(page)).toEqual(all.slice(0, 25));

  await page.locator("#page-next").click();
  await expect(page).toHaveURL(/from=25/);
  await page.locator("#page-first").click();
  await expect(page).toHaveURL(/\/destinations\?limit=25$/);

  await page.locator("#page-size").selectOption("50");
  await expect(page).toHaveURL(/\/destinations\?limit=50$/);
  await expect(page.locator(ROWS)).toHaveCount(TOTAL);
  await expect(page.locator("#page-next")).toBeDisabled();
});

test("the page state survives a reload and the back button", async ({ page }) => {
  await signedInAt(page, "/destinations?limit=25");
  const desc = orderedNames("destination", "b");
  await page.locator('button[data-sort="destination"]').click();
  await expect(page).toHaveURL(/\/destinations\?limit=25&dir=b$/);
  await expect.poll(() => names(page)).toEqual(desc.slice(0, 25));
  await page.locator("#page-next").click();
  await expect(page).toHaveURL(/\/destinations\?from=25&limit=25&dir=b$/);
  await expect.poll(() => names(page)).toEqual(desc.slice(25));

  await page.reload();
  await hydrated(page);
  await expect.poll(() => names(page)).toEqual(desc.slice(25));
  await expect(page.locator('thead th[data-col="destination"]')).toHaveAttribute("aria-sort", "descending");
  await expect(page.locator("#page-size")).toHaveValue("25");

  await page.goBack();
  await expect(page).toHaveURL(/\/destinations\?limit=25&dir=b$/);
  await expect.poll(() => names(page)).toEqual(desc.slice(0, 25));
  await page.goBack();
  await expect(page).toHaveURL(/\/destinations\?limit=25$/);
  await expect.poll(() => names(page)).toEqual(orderedNames("destination").slice(0, 25));
  await page.goForward();
  await expect.poll(() => names(page)).toEqual(desc.slice(0, 25));

  // A shared link with a filter fills the filter box.
  await page.goto("/destinations?destination=example.net");
  await hydrated(page);
  await expect(page.locator("#destinations-filter")).toHaveValue("example.net");
  await expect.poll(() => names(page)).toEqual(["down.example.net"]);
});

test("loading and error states are distinct", async ({ page, expectHttpError }) => {
  const api = "/_herald/admin/v1/federation/destinations";
  await signIn(page);
  await expect(page.locator(ROWS)).toHaveCount(TOTAL);

  // A slow answer shows the loading state first.
  let release = () => {};
  const held = new Promise<void>((r) => (release = r));
  await page.route(`**${api}*`, async (route) => {
    await held;
    await route.continue();
  });
  await page.reload();
  await hydrated(page);
  await expect(page.locator("#destinations-loading")).toHaveText("Loading…");
  await expect(page.locator("#destinations-table")).toHaveCount(0);
  release();
  await expect(page.locator(ROWS)).toHaveCount(TOTAL);
  await page.unroute(`**${api}*`);

  // A failing server is told as an error, not as an empty list.
  expectHttpError("GET", api, 500);
  await page.route(`**${api}*`, (route) => route.fulfill({ status: 500, body: "" }));
  await page.reload();
  await expect(page.locator("#destinations-error")).toHaveText("The server answered HTTP 500");
  await expect(page.locator("#destinations-empty")).toHaveCount(0);
});
