// The console at a phone's 360 px and a desktop's 1920 px, and its light and
// dark themes following the system setting.
import type { Page } from "@playwright/test";
import { ROOMS_OF } from "./seed";
import { expect, hydrated, signIn, test } from "./fixtures";

/** The page itself never scrolls sideways (wide tables scroll in their card). */
async function fitsWidth(page: Page) {
  const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  expect(scroll, "document width").toBeLessThanOrEqual(inner);
}

async function background(page: Page) {
  return page.evaluate(() => getComputedStyle(document.body).backgroundColor);
}

test("at 360 px wide nothing but the tables scrolls sideways", async ({ page }) => {
  await page.setViewportSize({ width: 360, height: 800 });
  await signIn(page);
  await expect(page.locator("#destinations-table tbody tr").first()).toBeVisible();
  await fitsWidth(page);
  await expect(page.locator("#sign-out")).toBeInViewport();
  await expect(page.locator("#destinations-filter")).toBeInViewport();

  await page.goto(`/destinations/${ROOMS_OF}`);
  await hydrated(page);
  await expect(page.locator("#rooms-table tbody tr").first()).toBeVisible();
  await fitsWidth(page);
  await page.locator("#reset-connection").click();
  const dialog = page.locator("#reset-dialog");
  await expect(dialog).toBeVisible();
  const box = await dialog.boundingBox();
  expect(box && box.x >= 0 && box.x + box.width <= 360, "dialog inside the screen").toBe(true);
  await page.keyboard.press("Escape");
  await expect(dialog).toBeHidden();
});

test("at 1920 px every column of the list shows without scrolling", async ({ page }) => {
  await page.setViewportSize({ width: 1920, height: 1080 });
  await signIn(page);
  await expect(page.locator("#destinations-table tbody tr").first()).toBeVisible();
  await fitsWidth(page);
  const [scroll, client] = await page
    .locator("#destinations-table")
    .evaluate((t) => [t.parentElement!.scrollWidth, t.parentElement!.clientWidth]);
  expect(scroll).toBeLessThanOrEqual(client);
  await expect(page.locator('thead th[data-col="last_successful_stream_ordering"]')).toBeInViewport();
});

test("light and dark themes follow the system", async ({ page }) => {
  await page.emulateMedia({ colorScheme: "light" });
  await signIn(page);
  await expect(page.locator("#destinations-table")).toBeVisible();
  const light = await background(page);
  await page.emulateMedia({ colorScheme: "dark" });
  const dark = await background(page);
  expect(light).toBe("rgb(246, 247, 249)");
  expect(dark).toBe("rgb(20, 23, 27)");
});
