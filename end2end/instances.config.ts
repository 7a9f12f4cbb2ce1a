// The several-instances spec (end2end/instances/): two `herald serve` on one
// throwaway PostgreSQL, started by instances/setup.ts; a test kills one.
import { defineConfig } from "@playwright/test";
import base from "./playwright.config";

export default defineConfig({
  ...base,
  testDir: "./instances",
  globalSetup: "./instances/setup.ts",
  workers: 1,
  reporter: "list",
});
