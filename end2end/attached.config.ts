// The attached-mode specs (end2end/attached/): Herald attached to a real
// Synapse, both started by scripts/synapse-attached.sh, which sets
// HERALD_URL, SYNAPSE_URL, SYNAPSE_DB, SYNAPSE_DB_KIND and SYNAPSE_PYTHON.
import { defineConfig } from "@playwright/test";
import base from "./playwright.config";

export default defineConfig({
  ...base,
  testDir: "./attached",
  globalSetup: undefined,
  workers: 1,
  reporter: "list",
});
