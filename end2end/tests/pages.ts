// Every console page, in the states worth checking: the accessibility spec
// (a11y.spec.ts) runs axe on each, the size spec (size.spec.ts) measures
// what each costs to load. A new page is one entry here.
import type { Page } from "@playwright/test";
import { expect } from "./fixtures";
import { NAMED, ROOMS_OF } from "./seed";

export type ConsolePage = {
  /** What the test is called. */
  name: string;
  /** Where it is. */
  path: string;
  /** Signed in as the admin first (the default), or signed out. */
  signedIn?: boolean;
  /** Statuses the page answers on purpose (as `expectHttpError` takes them). */
  httpErrors?: [method: string, path: string, status: number][];
  /** Waits for what the page shows once loaded, and opens what should be
   * checked open (a dialog). */
  prepare?: (page: Page) => Promise<void>;
};

const BACKING_OFF = NAMED.find((d) => (d.retry_interval ?? 0) > 0)!.destination;
const SYNAPSE_DESTINATIONS = "/_synapse/admin/v1/federation/destinations";
const HERALD_DESTINATIONS = "/_herald/admin/v1/federation/destinations";

export const PAGES: ConsolePage[] = [
  { name: "sign-in", path: "/login", signedIn: false, prepare: (p) => expect(p.locator("#login-user")).toBeVisible() },
  {
    name: "sign-in with an error",
    path: "/login",
    signedIn: false,
    httpErrors: [["POST", "/_matrix/client/v3/login", 403]],
    prepare: async (p) => {
      await p.locator("#login-user").fill("nobody");
      await p.locator("#login-password").fill("wrong password");
      await p.locator("#login-submit").click();
      await expect(p.locator("#login-error")).toBeVisible();
    },
  },
  { name: "home", path: "/", prepare: (p) => expect(p).toHaveURL(/\/destinations$/) },
  { name: "destinations", path: "/destinations", prepare: (p) => rowsShown(p, "#destinations-table") },
  {
    name: "destinations, bulk reset dialog",
    path: "/destinations?destination=example",
    prepare: async (p) => {
      await rowsShown(p, "#destinations-table");
      await p.locator("#destinations-table tbody tr[data-status='backing_off'] input[type='checkbox']").first().check();
      await p.locator("#bulk-reset").click();
      await expect(p.locator("#bulk-dialog")).toBeVisible();
    },
  },
  { name: "destination", path: `/destinations/${ROOMS_OF}`, prepare: (p) => rowsShown(p, "#rooms-table") },
  {
    name: "destination, reset dialog",
    path: `/destinations/${encodeURIComponent(BACKING_OFF)}`,
    prepare: async (p) => {
      await expect(p.locator("#destination-details")).toBeVisible();
      await p.locator("#reset-connection").click();
      await expect(p.locator("#reset-confirm")).toBeVisible();
    },
  },
  {
    name: "destinations, bulk forget dialog",
    path: "/destinations?destination=example",
    prepare: async (p) => {
      await rowsShown(p, "#destinations-table");
      await p.locator("#destinations-table tbody tr[data-status='backing_off'] input[type='checkbox']").first().check();
      await p.locator("#bulk-forget").click();
      await expect(p.locator("#bulk-dialog")).toContainText("Forget 1 destination?");
    },
  },
  {
    name: "destination, forget dialog",
    path: `/destinations/${ROOMS_OF}`,
    prepare: async (p) => {
      await rowsShown(p, "#rooms-table");
      await expect(p.locator("#history-empty")).toBeVisible();
      await p.locator("#forget").click();
      await expect(p.locator("#forget-confirm")).toBeVisible();
    },
  },
  {
    name: "unknown destination",
    path: "/destinations/unknown.example",
    httpErrors: [
      ["GET", `${HERALD_DESTINATIONS}/unknown.example`, 404],
      ["GET", `${HERALD_DESTINATIONS}/unknown.example/history`, 404],
      ["GET", `${SYNAPSE_DESTINATIONS}/unknown.example/rooms`, 404],
    ],
    prepare: async (p) => {
      await expect(p.locator("#destination-error")).toBeVisible();
      await expect(p.locator("#rooms-error")).toBeVisible();
      await expect(p.locator("#history-error")).toBeVisible();
    },
  },
  {
    name: "404",
    path: "/no/such/page",
    httpErrors: [["GET", "/no/such/page", 404]],
    prepare: (p) => expect(p.locator("#not-found-page h1")).toBeVisible(),
  },
  { name: "sender", path: "/sender", prepare: (p) => expect(p.locator("#sender-top-empty")).toBeVisible() },
];

async function rowsShown(page: Page, table: string) {
  await expect(page.locator(`${table} tbody tr`).first()).toBeVisible();
}
