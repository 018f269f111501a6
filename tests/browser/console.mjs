// Drives the analyst console in headless Chromium for tests/console_browser.rs.
// Env: BASE (http://host:port), ADMIN_KEY, GATEWAY_KEY, ATTACKER (an address
// the engine has denied), OUT (screenshot directory), PLAYWRIGHT_DIR (where
// scripts/services/browser.sh installed playwright-core). Exits non-zero,
// with the reason, on the first thing that is not as it should be.
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";

const { chromium } = createRequire(process.env.PLAYWRIGHT_DIR + "/")("playwright-core");
const { BASE, ADMIN_KEY, GATEWAY_KEY, ATTACKER, OUT } = process.env;
mkdirSync(OUT, { recursive: true });

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", e => errors.push(String(e)));

  // Not signed in: the console sends the browser to its login page.
  await page.goto(BASE + "/ui");
  if (!page.url().endsWith("/ui/login")) throw new Error("not sent to the login page: " + page.url());

  // A gateway key does not open the console.
  await page.fill("#key", GATEWAY_KEY);
  await page.click("button[type=submit]");
  await page.waitForSelector("[role=alert]");
  const said = await page.textContent("[role=alert]");
  if (!said.includes("gateway key")) throw new Error("gateway key refused without saying why: " + said);
  if (page.url().includes(GATEWAY_KEY) || page.url().includes("key=")) throw new Error("the key is in the address: " + page.url());
  await page.screenshot({ path: OUT + "/login-gateway-key-refused.png" });
  const cookies = await page.context().cookies();
  if (cookies.some(c => c.name === "gw_console")) throw new Error("a gateway key got a session");

  // An admin key: the feed shows the attacker's decision.
  await page.fill("#key", ADMIN_KEY);
  await page.click("button[type=submit]");
  await page.waitForURL("**/ui");
  const row = page.locator("#feed tbody tr", { hasText: ATTACKER });
  await row.first().waitFor({ timeout: 30000 });
  const action = await row.first().locator("td").nth(2).textContent();
  if (action !== "deny") throw new Error("the attacker's decision is " + action);
  await page.waitForSelector("#rates canvas", { timeout: 30000 });
  await page.screenshot({ path: OUT + "/now.png", fullPage: true });

  // Allow the address from the console: the form is filled from the feed.
  await row.first().locator("a.entity").click();
  if ((await page.inputValue("#act input[name=entity]")) !== ATTACKER) throw new Error("the entity link did not fill the form");
  await page.selectOption("#act select[name=action]", "allow");
  await page.fill("#act input[name=reason]", "cleared by an analyst in the console");
  await page.click("#act button[type=submit]");
  await page.waitForFunction(() => document.getElementById("act-result").textContent.startsWith("done"), null, { timeout: 15000 });
  await page.locator("#feed tbody tr", { hasText: "cleared by an analyst" }).first().waitFor({ timeout: 15000 });
  await page.screenshot({ path: OUT + "/after-allow.png", fullPage: true });
  if (errors.length) throw new Error("errors on the page: " + errors.join("; "));
  console.log("console: ok");
} finally {
  await browser.close();
}
