// The console against a real server: hydration, sign-in errors, the
// destinations table, sessions that survive a reload, sign-out.
import { ADMIN, ALICE, DESTINATIONS, NAMED, shown } from "./seed";
import { expect, hydrated, signIn, storedToken, test, TOKEN_KEY } from "./fixtures";

const LOGIN = "/_matrix/client/v3/login";
const DESTINATIONS_API = "/_synapse/admin/v1/federation/destinations";
const SUMMARY_API = "/_herald/admin/v1/federation/summary";
/** What the destinations page reads its rows from (Herald's list). */
const LIST_API = "/_herald/admin/v1/federation/destinations";

/** Logs in over the API (not the form) and returns the access token. */
async function apiToken(request: import("@playwright/test").APIRequestContext, who: typeof ADMIN) {
  const res = await request.post(LOGIN, {
    data: { type: "m.login.password", identifier: { type: "m.id.user", user: who.user }, password: who.password },
  });
  expect(res.status()).toBe(200);
  return (await res.json()).access_token as string;
}

test("the page hydrates and / sends a signed-out visitor to sign-in", async ({ page }) => {
  const res = await page.goto("/");
  expect(res?.status()).toBe(200);
  await hydrated(page);
  await expect(page).toHaveURL(/\/login$/);
  await expect(page.locator("#login-submit")).toBeEnabled();
  await expect(page).toHaveTitle("Sign in · Herald");
});

test("the server renders the sign-in form before the WASM runs", async ({ request }) => {
  const res = await request.get("/login");
  expect(res.status()).toBe(200);
  const html = await res.text();
  expect(html).toContain('id="login-form"');
  expect(html).toContain("/pkg/herald_bg.wasm");
  // Disabled until hydrated, so the form is never posted without the WASM.
  expect(html).toMatch(/<button id="login-submit" type="submit" disabled/);
});

test("a wrong password shows the server's error", async ({ page, expectHttpError }) => {
  expectHttpError("POST", LOGIN, 403);
  await signIn(page, { user: ADMIN.user, password: "not-the-password" });
  await expect(page.locator("#login-error")).toHaveText("Invalid username or password");
  await expect(page).toHaveURL(/\/login$/);
  expect(await storedToken(page)).toBeNull();
});

test("a user who is not a server admin is told so at sign-in", async ({ page, expectHttpError }) => {
  expectHttpError("GET", LIST_API, 403);
  await signIn(page, ALICE);
  await expect(page.locator("#login-error")).toHaveText("This account is not a server admin");
  await expect(page).toHaveURL(/\/login$/);
  expect(await storedToken(page)).toBeNull();
});

test("a stored token of a non-admin shows the message on the destinations page", async ({
  page,
  request,
  expectHttpError,
}) => {
  expectHttpError("GET", LIST_API, 403);
  expectHttpError("GET", SUMMARY_API, 403);
  const token = await apiToken(request, ALICE);
  await page.addInitScript(([key, value]) => window.localStorage.setItem(key, value), [TOKEN_KEY, token]);
  await page.goto("/destinations");
  await expect(page.locator("#destinations-error")).toHaveText("This account is not a server admin");
  await expect(page.locator("#sign-out")).toBeVisible();
});

test("the admin signs in and sees the destinations and their total", async ({ page }) => {
  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await expect(page.locator("#destinations-total")).toHaveAttribute("data-total", String(DESTINATIONS.length));
  await expect(page.locator("#destinations-total")).toHaveText(`1–${DESTINATIONS.length} of ${DESTINATIONS.length}`);
  await expect(page.locator("#signed-in-user")).toHaveText(/^@admin:/);

  const rows = page.locator("#destinations-table tbody tr");
  await expect(rows).toHaveCount(DESTINATIONS.length);
  // Sorted by destination, as the API's default order.
  const names = DESTINATIONS.map((d) => d.destination).sort();
  await expect(rows.first()).toHaveAttribute("data-destination", names[0]);
  expect(await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute("data-destination")))).toEqual(names);

  for (const row of NAMED) {
    const tr = page.locator(`#destinations-table tbody tr[data-destination="${row.destination}"]`);
    for (const [col, value] of Object.entries(shown(row))) {
      await expect(tr.locator(`[data-col="${col}"]`), `${row.destination} ${col}`).toHaveAttribute("data-value", value);
    }
  }
  const down = page.locator('tr[data-destination="down.example.net"]');
  await expect(down.locator('[data-col="retry_interval"]')).toHaveText("1 h");
  await expect(down.locator('[data-col="retry_last_ts"]')).toHaveText(/^\d+ d ago$/);
  await expect(down.locator('[data-col="retry_last_ts"]')).toHaveAttribute("title", "2023-11-14 22:13:20 UTC");
  await expect(page.locator('tr[data-destination="new.example.com"] [data-col="failure_ts"]')).toHaveText("—");
});

test("a reload keeps the session", async ({ page }) => {
  await signIn(page);
  await expect(page.locator("#destinations-table tbody tr")).toHaveCount(DESTINATIONS.length);
  await page.reload();
  await hydrated(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await expect(page.locator("#destinations-table tbody tr")).toHaveCount(DESTINATIONS.length);
  // And / goes straight to the destinations.
  await page.goto("/");
  await expect(page).toHaveURL(/\/destinations$/);
  await expect(page.locator("#destinations-table")).toBeVisible();
});

test("signing out returns to sign-in and ends the token on the server", async ({ page, request }) => {
  await signIn(page);
  await expect(page.locator("#destinations-table")).toBeVisible();
  const token = await storedToken(page);
  expect(token).toBeTruthy();

  await page.locator("#sign-out").click();
  await expect(page).toHaveURL(/\/login$/);
  await expect(page.locator("#sign-out")).toHaveCount(0);
  expect(await storedToken(page)).toBeNull();

  const res = await request.get(DESTINATIONS_API, { headers: { Authorization: `Bearer ${token}` } });
  expect(res.status()).toBe(401);

  // Signed out, /destinations sends the visitor to sign-in.
  await page.goto("/destinations");
  await expect(page).toHaveURL(/\/login$/);
});

test("a token the server no longer accepts returns to sign-in", async ({ page, expectHttpError }) => {
  expectHttpError("GET", LIST_API, 401);
  expectHttpError("GET", SUMMARY_API, 401);
  const summaryAnswered = page.waitForResponse((r) => new URL(r.url()).pathname === SUMMARY_API);
  await page.addInitScript(
    ([key]) => {
      // Only on the first load, so the page can clear it.
      if (!sessionStorage.getItem("seeded")) {
        sessionStorage.setItem("seeded", "1");
        window.localStorage.setItem(key, "not-a-valid-token");
      }
    },
    [TOKEN_KEY],
  );
  await page.goto("/destinations");
  await expect(page).toHaveURL(/\/login$/);
  expect(await storedToken(page)).toBeNull();
  await summaryAnswered;
});

test("an unknown page is the console's 404", async ({ page, expectHttpError }) => {
  expectHttpError("GET", "/no/such/page", 404);
  const res = await page.goto("/no/such/page");
  expect(res?.status()).toBe(404);
  await expect(page.locator("#not-found-page h1")).toHaveText("Page not found");
  await hydrated(page);
});

test("unknown API paths answer JSON, not the console", async ({ request }) => {
  const res = await request.get("/_synapse/admin/v1/no-such-endpoint");
  expect(res.status()).toBe(404);
  expect(await res.json()).toMatchObject({ errcode: "M_UNRECOGNIZED" });
});

test("site files are served with their types", async ({ request }) => {
  for (const [path, type] of [
    ["/pkg/herald.js", "javascript"],
    ["/pkg/herald_bg.wasm", "application/wasm"],
    ["/pkg/herald.css", "text/css"],
    ["/favicon.ico", "image/x-icon"],
  ]) {
    const res = await request.get(path);
    expect(res.status(), path).toBe(200);
    expect(res.headers()["content-type"], path).toContain(type);
  }
});
