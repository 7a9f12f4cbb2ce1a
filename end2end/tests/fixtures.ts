// `test` for every spec: the server's baseURL, and a guard that fails a test
// on any page error, console error, failed request or HTTP status >= 400 the
// page sees — except the ones the test declared with `expectHttpError`, each
// of which must then actually happen.
import { test as base, expect, type Page } from "@playwright/test";
import { ADMIN } from "./seed";

type ExpectedError = { method: string; path: string; status: number; seen: number };

type Fixtures = {
  /** Which server a test file uses: "read" (never changed), "mutable"
   * (for tests that reset destinations; such files run serially) or
   * "sending" (with the intake API, for tests that make destinations fail). */
  server: "read" | "mutable" | "sending";
  expectedErrors: ExpectedError[];
  expectHttpError: (method: string, path: string, status: number) => void;
  /** Console errors and failed requests a test provokes on purpose, by a
   * pattern of their text (each must then appear). */
  expectedConsole: { pattern: RegExp; seen: number }[];
  expectConsoleError: (pattern: RegExp) => void;
  guard: void;
};

export const test = base.extend<Fixtures>({
  server: ["read", { option: true }],

  baseURL: async ({ server }, use) => {
    const url = {
      read: process.env.HERALD_URL,
      mutable: process.env.HERALD_MUTABLE_URL,
      sending: process.env.HERALD_SENDING_URL,
    }[server];
    if (!url) throw new Error("the server URLs are unset: global-setup.ts did not run");
    await use(url);
  },

  expectedErrors: async ({}, use) => {
    await use([]);
  },

  expectHttpError: async ({ expectedErrors }, use) => {
    await use((method, path, status) => expectedErrors.push({ method, path, status, seen: 0 }));
  },

  expectedConsole: async ({}, use) => {
    await use([]);
  },

  expectConsoleError: async ({ expectedConsole }, use) => {
    await use((pattern) => expectedConsole.push({ pattern, seen: 0 }));
  },

  guard: [
    async ({ page, expectedErrors: expected, expectedConsole }, use) => {
      const problems: string[] = [];
      const match = (method: string | null, url: string, status: number | null) => {
        const { pathname } = new URL(url);
        return expected.find(
          (e) => (method === null || e.method === method) && e.path === pathname && (status === null || e.status === status),
        );
      };

      page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
      page.on("console", (msg) => {
        if (msg.type() !== "error") return;
        // Chromium logs every failed fetch; expected statuses are allowed.
        const failedLoad = /^Failed to load resource: the server responded with a status of (\d+)/.exec(msg.text());
        if (failedLoad && match(null, msg.location().url, Number(failedLoad[1]))) return;
        const provoked = expectedConsole.find((e) => e.pattern.test(msg.text()));
        if (provoked) {
          provoked.seen++;
          return;
        }
        problems.push(`console error: ${msg.text()} (${msg.location().url})`);
      });
      page.on("response", (res) => {
        if (res.status() < 400) return;
        const e = match(res.request().method(), res.url(), res.status());
        if (e) e.seen++;
        else problems.push(`HTTP ${res.status()} for ${res.request().method()} ${res.url()}`);
      });
      page.on("requestfailed", (req) => {
        const why = req.failure()?.errorText ?? "";
        // Navigations cancel what the previous page still had in flight.
        if (why === "net::ERR_ABORTED") return;
        const text = `request failed: ${req.method()} ${req.url()}: ${why}`;
        const provoked = expectedConsole.find((e) => e.pattern.test(text));
        if (provoked) {
          provoked.seen++;
          return;
        }
        problems.push(text);
      });

      await use();

      for (const e of expected) {
        if (e.seen === 0) problems.push(`expected HTTP ${e.status} for ${e.method} ${e.path} did not happen`);
      }
      for (const e of expectedConsole) {
        if (e.seen === 0) problems.push(`expected error ${e.pattern} did not happen`);
      }
      expect(problems, "errors seen by the page").toEqual([]);
    },
    { auto: true },
  ],
});

export { expect };

/** Waits until the WASM module has taken over the page. */
export async function hydrated(page: Page) {
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
}

/** Signs in through the form. */
export async function signIn(page: Page, who: { user: string; password: string } = ADMIN) {
  await page.goto("/login");
  await hydrated(page);
  await page.locator("#login-user").fill(who.user);
  await page.locator("#login-password").fill(who.password);
  await page.locator("#login-submit").click();
}

export const TOKEN_KEY = "herald.access_token";

export async function storedToken(page: Page) {
  return page.evaluate((key) => window.localStorage.getItem(key), TOKEN_KEY);
}
