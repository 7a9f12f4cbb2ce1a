// Resetting connections, against the second server (HERALD_MUTABLE_URL) so
// that no other test sees the changes. The tests run in order and each
// starts from what the previous one left:
//   in backoff at the start: down.example.net (retry due),
//   slow.example.org (backing off), [2001:db8::1]:8448 (never reached).
import type { Page } from "@playwright/test";
import { expect, hydrated, signIn, storedToken, test } from "./fixtures";

test.use({ server: "mutable" });
test.describe.configure({ mode: "serial" });

const API = "/_synapse/admin/v1/federation/destinations";
const IPV6 = "[2001:db8::1]:8448";

function rowOf(page: Page, name: string) {
  return page.locator(`#destinations-table tbody tr[data-destination="${name}"]`);
}

function box(page: Page, name: string) {
  return rowOf(page, name).locator('input[type="checkbox"]');
}

test("bulk reset: choose rows, or all in backoff matching the filter, then watch it run", async ({
  page,
  expectHttpError,
}) => {
  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await expect(page.locator("#bulk-count")).toHaveText("0 selected");
  await expect(page.locator("#bulk-reset")).toBeDisabled();
  // Only rows in backoff have a checkbox, and their rows are tinted.
  await expect(page.locator('#destinations-table tbody input[type="checkbox"]')).toHaveCount(3);
  await expect(box(page, "matrix.example.org")).toHaveCount(0);

  // One by one.
  await box(page, "down.example.net").check();
  await expect(page.locator("#bulk-count")).toHaveText("1 selected");
  await box(page, "down.example.net").uncheck();
  await expect(page.locator("#bulk-count")).toHaveText("0 selected");

  // All in backoff that match the filter: the IPv6 literal does not.
  await page.locator("#destinations-filter").fill("example");
  await expect(page).toHaveURL(/destination=example$/);
  await expect(page.locator("#bulk-select-all")).toHaveText("Select all in backoff matching the filter");
  await page.locator("#bulk-select-all").click();
  await expect(page.locator("#bulk-count")).toHaveAttribute("data-count", "2");
  await expect(box(page, "down.example.net")).toBeChecked();
  await expect(box(page, "slow.example.org")).toBeChecked();

  // One of the two fails on the server's side.
  const failing = `${API}/slow.example.org/reset_connection`;
  expectHttpError("POST", failing, 500);
  await page.route(`**${failing}`, (route) =>
    route.fulfill({
      status: 500,
      contentType: "application/json",
      body: JSON.stringify({ errcode: "M_UNKNOWN", error: "Internal server error" }),
    }),
  );

  await page.locator("#bulk-reset").click();
  const dialog = page.locator("#bulk-dialog");
  await expect(dialog).toBeVisible();
  await expect(dialog).toContainText("Reset the connection to 2 destinations?");
  // Escape asks nothing further and changes nothing.
  await expect(page.locator("#bulk-cancel")).toBeFocused();
  await page.keyboard.press("Escape");
  await expect(dialog).toBeHidden();
  await expect(page.locator("#bulk-count")).toHaveAttribute("data-count", "2");

  await page.locator("#bulk-reset").click();
  await page.locator("#bulk-confirm").click();
  await expect(page.locator("#bulk-status")).toHaveText("Done: 1 reset, 1 failed.");
  await expect(page.locator("#bulk-progress")).toHaveAttribute("value", "2");
  await expect(page.locator("#bulk-progress")).toHaveAttribute("max", "2");
  await expect(page.locator("#bulk-failures li")).toHaveCount(1);
  await expect(page.locator('#bulk-failures li[data-destination="slow.example.org"]')).toHaveText(
    "slow.example.org: Internal server error",
  );
  await expect(page.locator("#bulk-close")).toBeFocused();
  await page.locator("#bulk-close").click();
  await expect(dialog).toBeHidden();

  // The list is reloaded: the reset one is out of backoff, the failed one
  // stays chosen to try again.
  await expect(rowOf(page, "down.example.net")).toHaveAttribute("data-status", "healthy");
  await expect(box(page, "down.example.net")).toHaveCount(0);
  await expect(rowOf(page, "slow.example.org")).toHaveAttribute("data-status", "backing_off");
  await expect(page.locator("#bulk-count")).toHaveAttribute("data-count", "1");
  await expect(box(page, "slow.example.org")).toBeChecked();

  await page.locator("#bulk-clear").click();
  await expect(page.locator("#bulk-count")).toHaveAttribute("data-count", "0");
  await expect(box(page, "slow.example.org")).not.toBeChecked();
});

test("reset connection on a destination's page asks first, then shows the result", async ({ page, request }) => {
  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await page.goto("/destinations/slow.example.org");
  await hydrated(page);
  const status = page.locator('#destination-details td[data-col="status"]');
  await expect(status).toHaveAttribute("data-value", "backing_off");

  // Cancel leaves it alone.
  await page.locator("#reset-connection").click();
  await expect(page.locator("#reset-dialog")).toBeVisible();
  await page.locator("#reset-cancel").click();
  await expect(page.locator("#reset-dialog")).toBeHidden();
  await expect(status).toHaveAttribute("data-value", "backing_off");

  // From the keyboard: Enter opens the dialog, Tab reaches the button.
  await page.locator("#reset-connection").focus();
  await page.keyboard.press("Enter");
  await expect(page.locator("#reset-cancel")).toBeFocused();
  await page.keyboard.press("Shift+Tab");
  await expect(page.locator("#reset-confirm")).toBeFocused();
  await page.keyboard.press("Enter");

  await expect(page.locator("#reset-result")).toContainText("Connection reset");
  await expect(page.locator("#reset-dialog")).toBeHidden();
  await expect(status).toHaveAttribute("data-value", "healthy");
  await expect(page.locator("#reset-connection")).toBeDisabled();

  // The server agrees.
  const token = await storedToken(page);
  const res = await request.get(`${API}/slow.example.org`, { headers: { Authorization: `Bearer ${token}` } });
  expect(await res.json()).toMatchObject({ retry_last_ts: 0, retry_interval: 0, failure_ts: null });
});

test("auto-refresh picks up a change made behind the page's back", async ({ page, request }) => {
  test.setTimeout(40_000);
  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  // Sorted so that the IPv6 literal, the one left in backoff, comes first.
  await page.goto("/destinations?limit=25&order_by=retry_interval&dir=b");
  await hydrated(page);
  await expect(rowOf(page, IPV6)).toHaveAttribute("data-status", "never_reached");
  const neverReached = page.locator('#health-summary li[data-status="never_reached"]');
  await expect(neverReached).toHaveAttribute("data-count", "1");
  await page.locator("#auto-refresh").check();

  // Another admin tool resets it.
  const token = await storedToken(page);
  const res = await request.post(`${API}/${encodeURIComponent(IPV6)}/reset_connection`, {
    headers: { Authorization: `Bearer ${token}` },
    data: {},
  });
  expect(res.status()).toBe(200);

  await expect(rowOf(page, IPV6)).not.toHaveAttribute("data-status", "never_reached", { timeout: 15_000 });
  await expect(neverReached).toHaveAttribute("data-count", "0");
  // Same page, sort and size as before.
  await expect(page).toHaveURL(/\/destinations\?limit=25&order_by=retry_interval&dir=b$/);
  await expect(page.locator("#page-size")).toHaveValue("25");
  await expect(page.locator('thead th[data-col="retry_interval"]')).toHaveAttribute("aria-sort", "descending");
});
