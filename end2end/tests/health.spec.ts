// Why a destination fails, in the console, against the "sending" server
// (HERALD_SENDING_URL: the intake API on, loopback destinations allowed, no
// retries inside a request). Its destinations fail for real: a PDU is
// handed to the intake for 127.0.0.1:<port> where nothing listens, Herald
// tries to send it, the connection is refused, and Herald stores the last
// error and a history entry. The tests then read them in the list (the
// "Last error" and "Last delivered" columns), on the destination's page
// (the last error in full, the timelines, the entries) and forget
// destinations, one from its page and two in bulk.
import AxeBuilder from "@axe-core/playwright";
import type { APIRequestContext, Page } from "@playwright/test";
import { freePort } from "../global-setup";
import { ADMIN, SENDER_TOKEN } from "./seed";
import { expect, hydrated, signIn, test } from "./fixtures";

test.use({ server: "sending" });
test.describe.configure({ mode: "serial" });

const LOGIN = "/_matrix/client/v3/login";
const INTAKE = "/_herald/v1/send/pdus";
const HERALD = "/_herald/admin/v1/federation/destinations";
const ROOMS = "/_synapse/admin/v1/federation/destinations";

/** Destinations nothing listens on (ports bound then released). */
let down = "";
let forgotten = "";
let paged = "";
let bulk: string[] = [];
let token = "";

async function adminToken(request: APIRequestContext) {
  const res = await request.post(LOGIN, {
    data: { type: "m.login.password", identifier: { type: "m.id.user", user: ADMIN.user }, password: ADMIN.password },
  });
  expect(res.status()).toBe(200);
  return (await res.json()).access_token as string;
}

/** Hands one PDU for `room` to the intake API, for `destinations`. */
async function intake(request: APIRequestContext, id: string, room: string, destinations: string[]) {
  const res = await request.post(INTAKE, {
    headers: { Authorization: `Bearer ${SENDER_TOKEN}` },
    data: {
      events: [
        {
          event_id: id,
          room_id: room,
          pdu: { event_id: id, room_id: room, type: "m.room.message", sender: "@e2e:localhost", content: { body: id } },
          destinations,
        },
      ],
    },
  });
  expect(res.status(), await res.text()).toBe(200);
}

/** Herald's details of `name` (status 200 expected). */
async function health(request: APIRequestContext, name: string) {
  const res = await request.get(`${HERALD}/${encodeURIComponent(name)}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  expect(res.status()).toBe(200);
  return res.json();
}

function rowOf(page: Page, name: string) {
  return page.locator(`#destinations-table tbody tr[data-destination="${name}"]`);
}

test.beforeAll(async ({ request }) => {
  const ports = [];
  for (let i = 0; i < 5; i++) ports.push(await freePort());
  [down, forgotten, paged, ...bulk] = ports.map((p) => `127.0.0.1:${p}`);
  token = await adminToken(request);
  await intake(request, "$health-1", "!health:localhost", [down]);
  await intake(request, "$health-2", "!forget:localhost", [forgotten]);
  await intake(request, "$health-3", "!bulk:localhost", bulk);
  await intake(request, "$health-4", "!paged:localhost", [paged]);
  // Herald sends at once; each refused connection is stored (bounded wait).
  for (const name of [down, forgotten, paged, ...bulk]) {
    await expect
      .poll(async () => (await health(request, name)).last_error?.kind ?? null, { timeout: 20_000 })
      .toBe("connect");
  }
});

test("the list shows the last error, whole on hover, and that nothing was delivered", async ({ page }) => {
  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await page.goto(`/destinations?destination=127.0.0.1`);
  await hydrated(page);
  const row = rowOf(page, down);
  await expect(row).toHaveAttribute("data-status", "never_reached");
  await expect(page.locator('thead th[data-col="last_error"]')).toHaveText("Last error");
  await expect(page.locator('thead th[data-col="last_delivered_ts"]')).toHaveText("Last delivered");

  const cell = row.locator('td[data-col="last_error"]');
  await expect(cell).toHaveAttribute("data-value", "connect");
  await expect(cell.locator(".kind")).toHaveText("Connection");
  await expect(cell.locator(".msg")).not.toBeEmpty();
  // The whole text on hover: the kind, the message, the address tried, when.
  const title = (await cell.getAttribute("title")) ?? "";
  expect(title).toMatch(/^Connection: .+/);
  expect(title).toContain(`\nAddress: ${down}`);
  expect(title).toMatch(/\nAt: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);
  // The short message is the stored one, cut only by the style.
  const stored = (await health(page.request, down)).last_error;
  await expect(cell.locator(".msg")).toHaveText(stored.message);
  const clip = await cell.locator(".clip").evaluate((e) => {
    const style = getComputedStyle(e);
    return [style.textOverflow, style.overflow, e.getBoundingClientRect().width <= 18 * 16 + 1];
  });
  expect(clip).toEqual(["ellipsis", "hidden", true]);
  // Nothing was ever delivered to it.
  await expect(row.locator('td[data-col="last_delivered_ts"]')).toHaveText("—");

  // A seeded destination with no failure stored shows a dash.
  await page.goto(`/destinations?destination=matrix.example.org`);
  await expect(rowOf(page, "matrix.example.org").locator('td[data-col="last_error"]')).toHaveText("—");
});

test("the destination page shows the last error, the timelines and the history", async ({ page }) => {
  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await page.goto(`/destinations/${encodeURIComponent(down)}`);
  await hydrated(page);

  // The whole error under the table, which has it cut, the last delivery
  // and the next retry.
  const error = page.locator("#last-error");
  await expect(error).toHaveAttribute("data-kind", "connect");
  await expect(error).toContainText("Last error: Connection:");
  await expect(error).toContainText(`Address tried: ${down}`);
  await expect(error).toContainText(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((just now|\d+ (s|min) ago)\)/);
  const details = page.locator("#destination-details tbody");
  await expect(details.locator('[data-col="last_error"]')).toHaveAttribute("data-value", "connect");
  await expect(details.locator('[data-col="last_delivered_ts"]')).toHaveText("—");
  await expect(details.locator('[data-col="next_retry"]')).toHaveText(/^(in \d+ (s|min)|due now)$/);

  // Failing now: both timelines end in a down stretch, told in words too.
  for (const id of ["timeline-day", "timeline-month"]) {
    const svg = page.locator(`#${id} svg`);
    await expect(svg).toHaveAttribute("role", "img");
    await expect(svg).toHaveAttribute("aria-label", /down for .+ in 1 outage, up the rest\.$/);
    await expect(svg.locator("rect.tl-down")).toHaveCount(1);
    await expect(svg.locator("rect").last()).toHaveClass("tl-down");
    await expect(page.locator(`#${id} figcaption .tl-text`)).toHaveText(/down for .+ in 1 outage/);
  }
  // The down stretch starts when the failing entry says.
  const failing = page.locator('#history-entries li[data-event="failing"]');
  await expect(failing).toHaveCount(1);
  await expect(failing).toContainText(/Failing: Connection: .+ — \d+ failures?/);
  const start = await page.locator("#timeline-day rect.tl-down").getAttribute("data-start");
  const res = await page.request.get(`${HERALD}/${encodeURIComponent(down)}/history`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  const entries = (await res.json()).entries as { event: string; ts: number }[];
  expect(String(entries.find((e) => e.event === "failing")?.ts)).toBe(start);
  // One page holds it all: no "older" button.
  await expect(page.locator("#history-older")).toHaveCount(0);

  // The page with a real error and history has no WCAG 2 A/AA violation,
  // light or dark (a11y.spec.ts covers the seeded pages).
  for (const scheme of ["light", "dark"] as const) {
    await page.emulateMedia({ colorScheme: scheme });
    const results = await new AxeBuilder({ page })
      .withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"])
      .analyze();
    expect(results.passes.length).toBeGreaterThan(0);
    expect(
      results.violations.map((v) => `${scheme}: ${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`),
    ).toEqual([]);
  }
});

test("forget asks first: cancel keeps it, confirm removes it from the list", async ({ page }) => {
  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await page.goto(`/destinations/${encodeURIComponent(forgotten)}`);
  await hydrated(page);
  // The counts the dialog names are loaded: one room, one queued PDU.
  await expect(page.locator("#rooms-total")).toHaveAttribute("data-total", "1");
  await expect(page.locator("#destination-queue")).toContainText("1 PDUs and 0 EDUs queued");

  const dialog = page.locator("#forget-dialog");
  await page.locator("#forget").click();
  await expect(dialog).toBeVisible();
  await expect(page.locator("#forget-what")).toContainText(
    `Herald removes ${forgotten}, the 1 room recorded for it and the 1 PDU and 0 EDUs queued for it.`,
  );
  await expect(page.locator("#forget-cancel")).toBeFocused();
  await page.locator("#forget-cancel").click();
  await expect(dialog).toBeHidden();
  await expect(page).toHaveURL(new RegExp(`/destinations/${encodeURIComponent(forgotten)}$`));
  expect((await health(page.request, forgotten)).destination).toBe(forgotten);

  await page.locator("#forget").click();
  await page.locator("#forget-confirm").click();
  await expect(page).toHaveURL(/\/destinations$/);
  await expect(page.locator("#forget-notice")).toHaveText(
    `Forgot ${forgotten}: removed 1 room, 1 queued PDU and 0 queued EDUs.`,
  );
  await page.locator("#destinations-filter").fill(forgotten);
  await expect(page.locator("#destinations-empty")).toHaveText("No destinations match");

  const gone = await page.request.get(`${HERALD}/${encodeURIComponent(forgotten)}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  expect(gone.status()).toBe(404);
  const rooms = await page.request.get(`${ROOMS}/${encodeURIComponent(forgotten)}/rooms`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  expect(rooms.status()).toBe(404);
});

test("bulk forget uses bulk reset's selection and dialog", async ({ page }) => {
  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await page.goto(`/destinations?destination=127.0.0.1`);
  await hydrated(page);
  for (const name of bulk) await rowOf(page, name).locator('input[type="checkbox"]').check();
  await expect(page.locator("#bulk-count")).toHaveAttribute("data-count", "2");

  const dialog = page.locator("#bulk-dialog");
  await page.locator("#bulk-forget").click();
  await expect(dialog).toBeVisible();
  await expect(dialog).toContainText("Forget 2 destinations?");
  await page.locator("#bulk-cancel").click();
  await expect(dialog).toBeHidden();
  await expect(rowOf(page, bulk[0])).toHaveCount(1);

  await page.locator("#bulk-forget").click();
  await page.locator("#bulk-confirm").click();
  // One room recorded for each; the PDU queued for both counts once each.
  await expect(page.locator("#bulk-status")).toHaveText(
    "Done: 2 forgotten, 0 failed; removed 2 rooms, 2 queued PDUs and 0 queued EDUs.",
  );
  await page.locator("#bulk-close").click();
  await expect(dialog).toBeHidden();
  for (const name of bulk) await expect(rowOf(page, name)).toHaveCount(0);
  await expect(rowOf(page, down)).toHaveCount(1);
});

test("older history entries come a page at a time", async ({ page, request }) => {
  // Each reset of its backoff is an entry, and the PDU still queued fails
  // again at once: 55 rounds make more than one page of 50.
  const auth = { Authorization: `Bearer ${token}` };
  const inBackoff = async () => (await health(request, paged)).retry_last_ts !== 0;
  for (let round = 0; round < 55; round++) {
    await expect.poll(inBackoff, { timeout: 10_000 }).toBe(true);
    const res = await request.post(`${ROOMS}/${encodeURIComponent(paged)}/reset_connection`, { headers: auth, data: {} });
    expect(res.status()).toBe(200);
  }
  await expect.poll(inBackoff, { timeout: 10_000 }).toBe(true);

  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await page.goto(`/destinations/${encodeURIComponent(paged)}`);
  await hydrated(page);
  const entries = page.locator("#history-entries li");
  await expect(entries).toHaveCount(50);
  await expect(entries.first()).toHaveAttribute("data-event", "reset");
  await expect(entries.first()).toContainText(`Backoff reset by @${ADMIN.user}:`);
  // The time before the oldest loaded entry is not guessed.
  await expect(page.locator("#timeline-month rect.tl-not-loaded")).toHaveCount(1);

  await page.locator("#history-older").click();
  // 55 resets and the outage's failing entry, newest first, no repeats.
  await expect(entries).toHaveCount(56);
  const ids = await entries.evaluateAll((lis) => lis.map((li) => Number(li.getAttribute("data-id"))));
  expect(ids).toEqual([...ids].sort((a, b) => b - a));
  expect(new Set(ids).size).toBe(ids.length);
  await expect(entries.last()).toHaveAttribute("data-event", "failing");
  await expect(page.locator("#history-older")).toHaveCount(0);
  await expect(page.locator("#timeline-month rect.tl-not-loaded")).toHaveCount(0);
});
