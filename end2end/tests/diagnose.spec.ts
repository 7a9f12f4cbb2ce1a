// Diagnose on a destination's page: the button runs
// `POST /_herald/admin/v1/federation/destinations/<d>/diagnose` and shows the
// steps as a checklist, the failing one highlighted and named, the raw JSON
// one click away; axe finds no WCAG 2 A/AA violation in the panel, light or
// dark. The e2e server runs with Synapse's default IP range blacklist, so a
// loopback destination (a listener of this test on 127.0.0.1 counting
// connections) and the seeded documentation address are reported
// `blocked`, and nothing is ever connected to.
import * as net from "node:net";
import AxeBuilder from "@axe-core/playwright";
import type { Page } from "@playwright/test";
import { expect, hydrated, signIn, test } from "./fixtures";

const TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];
const SEEDED = "[2001:db8::1]:8448";

async function diagnose(page: Page) {
  const run = page.locator("#diagnose-run");
  await expect(run).toBeEnabled();
  await run.click();
  await expect(page.locator("#diagnose-summary")).toBeVisible();
  await expect(run).toBeEnabled();
}

/** The checklist as [step, verdict] pairs. */
async function steps(page: Page) {
  return page
    .locator("#diagnose-steps li")
    .evaluateAll((lis) => lis.map((li) => [li.getAttribute("data-step"), li.getAttribute("data-verdict")]));
}

test("the checklist names the failing step and the raw JSON is one click away", async ({ page }) => {
  await signIn(page);
  await expect(page).toHaveURL(/\/destinations$/);
  await page.goto(`/destinations/${encodeURIComponent(SEEDED)}`);
  await hydrated(page);
  await expect(page.locator("#diagnose-region")).toBeEmpty();
  await diagnose(page);

  const summary = page.locator("#diagnose-summary");
  await expect(summary).toHaveAttribute("data-ok", "false");
  await expect(summary).toContainText(`Federation with ${SEEDED} fails at Addresses and IP filter`);
  expect(await steps(page)).toEqual([
    ["well_known", "skipped"],
    ["srv_matrix_fed", "skipped"],
    ["srv_matrix", "skipped"],
    ["addresses", "blocked"],
    ["connect", "skipped"],
    ["tls", "skipped"],
    ["version", "skipped"],
    ["key", "skipped"],
  ]);
  const failing = page.locator("#diagnose-steps li.failing");
  await expect(failing).toHaveCount(1);
  await expect(failing).toHaveAttribute("data-step", "addresses");
  await expect(failing).toContainText("Failing step");
  await expect(failing).toContainText("blocked by the IP range filter; nothing was connected to");

  const raw = page.locator("#diagnose-raw pre");
  await expect(raw).toBeHidden();
  await page.locator("#diagnose-raw summary").click();
  await expect(raw).toBeVisible();
  const report = JSON.parse((await raw.textContent()) ?? "");
  expect(report.FederationOK).toBe(false);
  expect(report.server_name).toBe(SEEDED);
  expect(report.steps[report.failed_step].step).toBe("addresses");
  expect(report.DNSResult.blocked).toEqual(["[2001:db8::1]:8448"]);
  expect(report.steps.length).toBe((await steps(page)).length);
});

test("a loopback destination is reported blocked and never connected to", async ({ page, expectHttpError }) => {
  let accepted = 0;
  const listener = net.createServer((socket) => {
    accepted++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const name = `127.0.0.1:${(listener.address() as net.AddressInfo).port}`;
  try {
    // Not a known destination: the page's own reads say so; Diagnose works all the same.
    const encoded = encodeURIComponent(name);
    expectHttpError("GET", `/_herald/admin/v1/federation/destinations/${encoded}`, 404);
    expectHttpError("GET", `/_herald/admin/v1/federation/destinations/${encoded}/history`, 404);
    expectHttpError("GET", `/_synapse/admin/v1/federation/destinations/${encoded}/rooms`, 404);
    await signIn(page);
    await expect(page).toHaveURL(/\/destinations$/);
    await page.goto(`/destinations/${encoded}`);
    await hydrated(page);
    await expect(page.locator("#destination-error")).toBeVisible();
    await diagnose(page);
    await expect(page.locator("#diagnose-summary")).toContainText(`Federation with ${name} fails at Addresses and IP filter`);
    await expect(page.locator("#diagnose-steps li.failing")).toHaveAttribute("data-verdict", "blocked");
    expect(accepted).toBe(0);
  } finally {
    await new Promise((resolve) => listener.close(resolve));
  }
});

for (const scheme of ["light", "dark"] as const) {
  test(`the diagnosis has no WCAG 2 A/AA violation (${scheme})`, async ({ page }) => {
    await page.emulateMedia({ colorScheme: scheme });
    await signIn(page);
    await expect(page).toHaveURL(/\/destinations$/);
    await page.goto(`/destinations/${encodeURIComponent(SEEDED)}`);
    await hydrated(page);
    await diagnose(page);
    await page.locator("#diagnose-raw summary").click();
    const results = await new AxeBuilder({ page }).include("#diagnose").withTags(TAGS).analyze();
    expect(results.passes.length, "axe checked something").toBeGreaterThan(0);
    expect(
      results.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`),
    ).toEqual([]);
  });
}
