// The console under its Content-Security-Policy (issue 11): the page is
// served with the policy, still hydrates and signs in under it (every other
// spec runs under it too, and fails on any console error such as a refused
// script), and a script injected into the page does not run, whichever way
// it comes in.
import { expect, hydrated, signIn, test } from "./fixtures";

test("pages carry the policy and the other security headers", async ({ page }) => {
  const response = await page.goto("/login");
  const headers = response!.headers();
  const csp = headers["content-security-policy"];
  expect(csp).toMatch(/script-src 'self' 'nonce-[A-Za-z0-9_-]{16,}' 'wasm-unsafe-eval'/);
  expect(csp).toContain("frame-ancestors 'none'");
  expect(csp).not.toContain("unsafe-inline");
  expect(headers["x-content-type-options"]).toBe("nosniff");
  expect(headers["referrer-policy"]).toBe("no-referrer");
  await hydrated(page);
});

test("the console works with the policy enforced", async ({ page }) => {
  const violations: string[] = [];
  await page.exposeFunction("reportViolation", (v: string) => violations.push(v));
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) =>
      (window as unknown as { reportViolation: (v: string) => void }).reportViolation(
        `${e.violatedDirective} ${e.blockedURI}`,
      ),
    );
  });
  await signIn(page);
  await expect(page.locator("#destinations-table tbody tr").first()).toBeVisible();
  expect(violations).toEqual([]);
});

test("an injected script does not run", async ({ page, expectConsoleError }) => {
  // Chromium reports each refusal on the console; the guard lets these
  // through only because they are expected here (and must happen).
  expectConsoleError(/Executing inline script violates .*script-src/);
  expectConsoleError(/Executing inline event handler violates .*script-src/);
  await page.goto("/login");
  await hydrated(page);
  const violations = await page.evaluate(async () => {
    const seen: string[] = [];
    document.addEventListener("securitypolicyviolation", (e) => seen.push(e.violatedDirective));
    const w = window as unknown as { injected?: string };
    // An inline <script> added to the page, as a stored XSS would add it.
    const script = document.createElement("script");
    script.textContent = "window.injected = 'script';";
    document.body.appendChild(script);
    // Markup with an event handler, as an unescaped value in innerHTML would.
    const div = document.createElement("div");
    div.innerHTML = `<img src="/favicon.ico" onload="window.injected = 'handler'">`;
    document.body.appendChild(div);
    await new Promise((resolve) => setTimeout(resolve, 0));
    const img = div.querySelector("img")!;
    await new Promise((resolve) => {
      if (img.complete) resolve(null);
      img.addEventListener("load", resolve);
      img.addEventListener("error", resolve);
    });
    return { injected: w.injected ?? null, seen };
  });
  expect(violations.injected).toBeNull();
  expect(violations.seen).toEqual(expect.arrayContaining(["script-src-elem", "script-src-attr"]));
});

test("the console refuses to be framed", async ({ page, baseURL, expectConsoleError }) => {
  expectConsoleError(/frame-ancestors 'none'/);
  expectConsoleError(/request failed: GET .*\/login: net::ERR_BLOCKED_BY_RESPONSE/);
  // A page of another origin (no policy of its own) frames the console.
  await page.setContent(`<iframe id="f" src="${baseURL}/login"></iframe>`);
  await expect.poll(() => page.frames().length).toBe(2);
  const child = page.frames()[1];
  await child.waitForLoadState();
  await expect(child.locator("#login-user")).toHaveCount(0);
});
