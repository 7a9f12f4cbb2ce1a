// Herald attached to a real Synapse (scripts/synapse-attached.sh): the
// console shows Synapse's own rows, signs in with Synapse's accounts,
// resets through Synapse and follows what Synapse writes. Runs once with
// Synapse on SQLite and once on PostgreSQL.
import { execFileSync } from "node:child_process";
import type { APIRequestContext, Page } from "@playwright/test";
import { expect, hydrated, signIn, test } from "../tests/fixtures";

test.describe.configure({ mode: "serial" });

const SYNAPSE = process.env.SYNAPSE_URL!;
const DB = process.env.SYNAPSE_DB!;
const PYTHON = process.env.SYNAPSE_PYTHON!;
const ADMIN = { user: "boss", password: "attached-boss-pw" };
const CAROL = { user: "carol", password: "attached-carol-pw" };
const LIST_API = "/_synapse/admin/v1/federation/destinations";
const HERALD_LIST_API = "/_herald/admin/v1/federation/destinations";
const SEEDED = 120;
// `refresh_interval` is 1 s in the script's config: a change shows within
// two intervals plus a page's poll.
const REFRESH_BOUND_MS = 5_000;

/** What scripts/synapse-db.py says or does in Synapse's database. */
function db(...args: string[]): string {
  return execFileSync(PYTHON, ["../scripts/synapse-db.py", DB, ...args], { encoding: "utf8" });
}

/** An access token of Synapse's own, by its own login. */
async function synapseToken(request: APIRequestContext, who: { user: string; password: string }) {
  const res = await request.post(`${SYNAPSE}/_matrix/client/v3/login`, {
    data: { type: "m.login.password", identifier: { type: "m.id.user", user: who.user }, password: who.password },
  });
  expect(res.status()).toBe(200);
  return (await res.json()).access_token as string;
}

function row(page: Page, name: string) {
  return page.locator(`#destinations-table tbody tr[data-destination="${name}"]`);
}

test("Synapse's admin signs in to Herald and sees Synapse's destinations", async ({ page }) => {
  await signIn(page, ADMIN);
  await expect(page).toHaveURL(/\/destinations$/);
  await expect(page.locator("#summary-total")).toHaveAttribute("data-count", String(SEEDED));
  await expect(row(page, "d0000.attached.test")).toBeVisible();
  await expect(page.locator("#attached-to")).toHaveText("Attached to Synapse");
});

test("a Synapse user who is not an admin is refused", async ({ page, expectHttpError }) => {
  expectHttpError("GET", HERALD_LIST_API, 403);
  await signIn(page, CAROL);
  await expect(page.locator("#login-error")).toHaveText("This account is not a server admin");
});

test("a wrong password is Synapse's refusal", async ({ page, expectHttpError }) => {
  expectHttpError("POST", "/_matrix/client/v3/login", 403);
  await signIn(page, { user: ADMIN.user, password: "not-the-password" });
  await expect(page.locator("#login-error")).toContainText(/Invalid username or password/);
});

test("a reset through Herald is Synapse's own reset", async ({ page, request }) => {
  // d0001 is backing off in the seed.
  const name = "d0001.attached.test";
  const token = await synapseToken(request, ADMIN);
  const before = await request.get(`${SYNAPSE}${LIST_API}/${name}`, { headers: { Authorization: `Bearer ${token}` } });
  expect((await before.json()).retry_interval).toBeGreaterThan(0);

  await signIn(page, ADMIN);
  await expect(page).toHaveURL(/\/destinations$/);
  await page.goto(`/destinations/${name}`);
  await hydrated(page);
  await expect(page.locator("#reset-connection")).toBeEnabled();
  await page.locator("#reset-connection").click();
  await page.locator("#reset-confirm").click();
  await expect(page.locator("#reset-result")).toContainText("reset by Synapse");
  await expect(page.locator("#reset-connection")).toBeDisabled();

  // Synapse's own admin API (its cache, not only its table) says it is reset.
  const after = await request.get(`${SYNAPSE}${LIST_API}/${name}`, { headers: { Authorization: `Bearer ${token}` } });
  const details = await after.json();
  expect(details.retry_interval).toBe(0);
  expect(details.failure_ts).toBeNull();
  expect(JSON.parse(db("get", name)).retry_interval).toBe(0);
  // And Herald's row followed at once.
  const herald = await page.request.get(`${LIST_API}/${name}`, {
    headers: { Authorization: `Bearer ${await page.evaluate(() => localStorage.getItem("herald.access_token"))}` },
  });
  expect((await herald.json()).retry_interval).toBe(0);
});

test("a row Synapse changes shows in Herald within the refresh delay", async ({ page }) => {
  const name = "d0003.attached.test"; // healthy in the seed
  await signIn(page, ADMIN);
  await expect(page).toHaveURL(/\/destinations$/);
  const failure = Date.now() - 5_000;
  db("set", name, "failure_ts", String(failure));
  db("set", name, "retry_last_ts", String(Date.now()));
  db("set", name, "retry_interval", "3600000");
  const started = Date.now();
  await expect
    .poll(
      async () => {
        await page.goto(`/destinations/${name}`);
        await hydrated(page);
        return page.locator('#destination-details td[data-col="retry_interval"]').textContent();
      },
      { timeout: REFRESH_BOUND_MS, intervals: [250] },
    )
    .toBe("1 h");
  console.log(`attached: a change in Synapse's database showed in ${Date.now() - started} ms`);
});
