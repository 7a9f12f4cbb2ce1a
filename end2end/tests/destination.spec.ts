// A destination's page against the seeded rows: the link from the list, the
// details with the derived status, the rooms table paged and reversed with
// its state in the URL, percent-encoded names, and the Reset connection
// button disabled when there is nothing to reset.
import type { Page } from "@playwright/test";
import { NAMED, ROOMS, ROOMS_OF, orderedRooms, statusOf } from "./seed";
import { expect, hydrated, signIn, test } from "./fixtures";

const ROOM_ROWS = "#rooms-table tbody tr";

async function roomIds(page: Page) {
  return page.locator(ROOM_ROWS).evaluateAll((trs) => trs.map((tr) => tr.getAttribute("data-room")));
}

function row(name: string) {
  const r = NAMED.find((d) => d.destination === name);
  if (!r) throw new Error(`${name} is not seeded`);
  return r;
}

test("a row links to its destination, which shows its health and rooms", async ({ page }) => {
  await signIn(page);
  await page.locator(`#destinations-table tr[data-destination="${ROOMS_OF}"] a`).click();
  await expect(page).toHaveURL(new RegExp(`/destinations/${ROOMS_OF}$`));
  await expect(page.locator("#destination-name")).toHaveText(ROOMS_OF);
  await expect(page).toHaveTitle(`${ROOMS_OF} · Herald`);

  const details = page.locator("#destination-details tbody");
  await expect(details.locator('[data-col="status"]')).toHaveAttribute("data-value", statusOf(row(ROOMS_OF)));
  await expect(details.locator('[data-col="retry_interval"]')).toHaveText("1 h");
  await expect(details.locator('[data-col="failure_ts"]')).toHaveAttribute("title", "2023-11-14 19:26:40 UTC");
  await expect(details.locator('[data-col="last_successful_stream_ordering"]')).toHaveText("7");
  await expect(page.locator("#reset-connection")).toBeEnabled();

  // Synapse's default page of rooms is 100: all 30 at once, by room id.
  await expect.poll(() => roomIds(page)).toEqual(orderedRooms());
  await expect(page.locator("#rooms-total")).toHaveText(`1–${ROOMS.length} of ${ROOMS.length}`);
  const first = page.locator(ROOM_ROWS).first();
  await expect(first.locator('[data-col="stream_ordering"]')).toHaveText("1000");

  // The breadcrumb goes back to the list.
  await page.locator(".crumbs a").click();
  await expect(page).toHaveURL(/\/destinations$/);
});

test("the rooms table pages and reverses, and its state is in the URL", async ({ page }) => {
  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await page.goto(`/destinations/${ROOMS_OF}`);
  await hydrated(page);
  await expect(page.locator(ROOM_ROWS)).toHaveCount(ROOMS.length);

  await page.locator("#page-size").selectOption("25");
  await expect(page).toHaveURL(new RegExp(`/destinations/${ROOMS_OF}\\?limit=25$`));
  await expect.poll(() => roomIds(page)).toEqual(orderedRooms().slice(0, 25));
  await expect(page.locator("#page-prev")).toBeDisabled();

  await page.locator("#page-next").click();
  await expect(page).toHaveURL(/\?from=25&limit=25$/);
  await expect.poll(() => roomIds(page)).toEqual(orderedRooms().slice(25));
  await expect(page.locator("#rooms-total")).toHaveText(`26–30 of ${ROOMS.length}`);
  await expect(page.locator("#page-next")).toBeDisabled();

  // The header flips the order and goes back to the first page.
  await expect(page.locator("#rooms-table thead th").first()).toHaveAttribute("aria-sort", "ascending");
  await page.locator('#rooms-table button[data-sort="room_id"]').click();
  await expect(page).toHaveURL(/\?limit=25&dir=b$/);
  await expect.poll(() => roomIds(page)).toEqual(orderedRooms("b").slice(0, 25));
  await expect(page.locator("#rooms-table thead th").first()).toHaveAttribute("aria-sort", "descending");

  await page.reload();
  await hydrated(page);
  await expect.poll(() => roomIds(page)).toEqual(orderedRooms("b").slice(0, 25));
  await page.goBack();
  await expect(page).toHaveURL(/\?from=25&limit=25$/);
  await expect.poll(() => roomIds(page)).toEqual(orderedRooms().slice(25));
});

test("a name with a port and an IPv6 literal works, percent-encoded", async ({ page }) => {
  const name = "[2001:db8::1]:8448";
  await signIn(page);
  await page.locator(`#destinations-table tr[data-destination="${name}"] a`).click();
  // The link is fully encoded; the router may leave the brackets bare.
  await expect(page.locator("#destination-name")).toHaveText(name);
  expect(decodeURIComponent(new URL(page.url()).pathname)).toBe(`/destinations/${name}`);
  await expect(page.locator(`#destinations-table`)).toHaveCount(0);
  await expect(page.locator('#destination-details td[data-col="status"]')).toHaveAttribute("data-value", "never_reached");
  await expect(page.locator("#rooms-empty")).toHaveText("No rooms recorded for this destination.");
  await expect(page.locator("#reset-connection")).toBeEnabled();

  // The encoded link itself, as shared, and a reload.
  await page.goto("/destinations/%5B2001%3Adb8%3A%3A1%5D%3A8448");
  await hydrated(page);
  await expect(page.locator("#destination-name")).toHaveText(name);
  await expect(page.locator('#destination-details td[data-col="status"]')).toHaveAttribute("data-value", "never_reached");
});

test("a healthy destination has nothing to reset", async ({ page }) => {
  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await page.goto("/destinations/matrix.example.org");
  await hydrated(page);
  await expect(page.locator('#destination-details td[data-col="status"]')).toHaveAttribute("data-value", "healthy");
  await expect(page.locator("#reset-connection")).toBeDisabled();
  await expect(page.locator("#destination-region")).toContainText("Not in backoff: there is nothing to reset.");
  // The sender's view of it (Herald's queue endpoint): nothing queued.
  await expect(page.locator("#destination-queue")).toHaveAttribute("data-state", "idle");
  await expect(page.locator("#destination-queue")).toHaveText("Sender: Idle · nothing queued.");
});

test("an unknown destination says so", async ({ page, expectHttpError }) => {
  const name = "nowhere.example";
  const api = `/_synapse/admin/v1/federation/destinations/${name}`;
  const herald = `/_herald/admin/v1/federation/destinations/${name}`;
  expectHttpError("GET", herald, 404);
  expectHttpError("GET", `${api}/rooms`, 404);
  expectHttpError("GET", `${herald}/history`, 404);
  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await page.goto(`/destinations/${name}`);
  await expect(page.locator("#destination-error")).toHaveText("Unknown destination");
  await expect(page.locator("#rooms-error")).toHaveText("Unknown destination");
  await expect(page.locator("#history-error")).toHaveText("Unknown destination");
});
