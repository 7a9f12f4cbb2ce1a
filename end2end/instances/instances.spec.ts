// Several instances on one PostgreSQL (instances/setup.ts): the admin sees
// both in the console's Instances page, the shards split between them;
// when one is killed (`kill -9`), the page shows the other holding every
// shard within the takeover bound (10 s).
import type { Page } from "@playwright/test";
import { expect, signIn, test } from "../tests/fixtures";

test.describe.configure({ mode: "serial" });

const SHARDS = 256;
/** The takeover's bound (the 10 s): the page reloads every second. */
const TAKEOVER_SHOWN_MS = 10_000;

function row(page: Page, name: string) {
  return page.locator(`#instances tbody tr[data-instance="${name}"]`);
}

async function openInstances(page: Page) {
  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await page.goto("/instances");
  await expect(page.locator("#instances-this")).toContainText("alpha");
}

test("the Instances page shows both instances, the shards split between them", async ({ page }) => {
  await openInstances(page);
  for (const name of ["alpha", "beta"]) {
    await expect(row(page, name).locator("td[data-live]")).toHaveAttribute("data-live", "true");
    // Split evenly once both are live (the page reloads every second).
    await expect(row(page, name).locator("td.num")).toHaveText(String(SHARDS / 2), { timeout: 20_000 });
  }
  await expect(row(page, "alpha")).toContainText("(this one)");
});

test("a killed instance's shards are shown held by the other", async ({ page }) => {
  await openInstances(page);
  await expect(row(page, "beta").locator("td.num")).toHaveText(String(SHARDS / 2), { timeout: 20_000 });
  const killed = Date.now();
  process.kill(Number(process.env.HERALD_BETA_PID), "SIGKILL");
  await expect(row(page, "alpha").locator("td.num")).toHaveText(String(SHARDS), { timeout: TAKEOVER_SHOWN_MS });
  console.log(`alpha shown holding all ${SHARDS} shards ${Date.now() - killed} ms after beta was killed`);
  await expect(row(page, "alpha").locator("td", { hasText: /–/ }).last()).toHaveText(`0–${SHARDS - 1}`);
  await expect(row(page, "beta").locator("td[data-live]")).toHaveAttribute("data-live", "false", {
    timeout: TAKEOVER_SHOWN_MS,
  });
  await expect(row(page, "beta").locator("td.num")).toHaveText("0");
});
