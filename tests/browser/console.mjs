// Drives the analyst console in headless Chromium for tests/console_browser.rs.
// Env: BASE (http://host:port), ADMIN_KEY, GATEWAY_KEY, ATTACKER (an address
// the engine has denied), INPUT (the log the server follows), SECOND_LINES (a
// file of another attack's lines) and SECOND_ATTACKER (its address), OUT
// (screenshot directory), PLAYWRIGHT_DIR (where scripts/services/browser.sh
// installed playwright-core). Exits non-zero, with the reason, on the first
// thing that is not as it should be.
import { createRequire } from "node:module";
import { appendFileSync, mkdirSync, readFileSync } from "node:fs";

const { chromium } = createRequire(process.env.PLAYWRIGHT_DIR + "/")("playwright-core");
const { BASE, ADMIN_KEY, GATEWAY_KEY, ATTACKER, INPUT, SECOND_LINES, SECOND_ATTACKER, OUT } = process.env;
mkdirSync(OUT, { recursive: true });

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
const errors = [];
const step = what => console.log("· " + what);
let page;
try {
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", e => errors.push(String(e)));
  // Nothing leaves the machine: every request the console makes is to the server.
  page.on("request", r => { if (!r.url().startsWith(BASE) && !r.url().startsWith("data:")) errors.push("a request off the server: " + r.url()); });

  step("not signed in: sent to the login page");
  await page.goto(BASE + "/ui");
  if (!page.url().endsWith("/ui/login")) throw new Error("not sent to the login page: " + page.url());

  step("a gateway key does not open the console");
  await page.fill("#key", GATEWAY_KEY);
  await page.click("button[type=submit]");
  await page.waitForSelector("[role=alert]");
  const said = await page.textContent("[role=alert]");
  if (!said.includes("gateway key")) throw new Error("gateway key refused without saying why: " + said);
  if (page.url().includes(GATEWAY_KEY) || page.url().includes("key=")) throw new Error("the key is in the address: " + page.url());
  await page.screenshot({ path: OUT + "/login-gateway-key-refused.png" });
  const cookies = await page.context().cookies();
  if (cookies.some(c => c.name === "gw_console")) throw new Error("a gateway key got a session");

  step("an admin key: the feed shows the attacker's decision");
  await page.fill("#key", ADMIN_KEY);
  await page.click("button[type=submit]");
  await page.waitForURL("**/ui");
  const row = page.locator("#feed tbody tr", { hasText: ATTACKER });
  await row.first().waitFor({ timeout: 30000 });
  const action = await row.first().locator("td").nth(2).textContent();
  if (action !== "deny") throw new Error("the attacker's decision is " + action);
  await page.waitForSelector("#rates canvas", { timeout: 30000 });

  step("a new attack reaches the open feed through the change stream, without a reload");
  await page.evaluate(() => { window.__notReloaded = true; });
  appendFileSync(INPUT, readFileSync(SECOND_LINES));
  await page.locator("#feed tbody tr", { hasText: SECOND_ATTACKER }).first().waitFor({ timeout: 30000 });
  if (!(await page.evaluate(() => window.__notReloaded === true))) throw new Error("the page reloaded");
  await page.locator("#top li", { hasText: SECOND_ATTACKER }).first().waitFor({ timeout: 30000 });
  await page.screenshot({ path: OUT + "/now.png", fullPage: true });

  step("the entity page opens from the feed and plots its traffic");
  await row.first().locator("a.entity").click();
  await page.waitForURL("**/ui#entity/ip/" + ATTACKER);
  await page.locator("#ent-decision", { hasText: "deny" }).waitFor({ timeout: 30000 });
  await page.waitForSelector("#ent-plot canvas", { timeout: 30000 });
  // The tables are written in parts finished every second: ask again until
  // the story (decisions with their features) is there.
  for (let i = 0; ; i++) {
    if (await page.locator("#ent-decisions table").count()) break;
    if (i === 60) throw new Error("the entity page never showed its decisions from the tables");
    await page.waitForTimeout(1000);
    await page.evaluate(() => window.dispatchEvent(new HashChangeEvent("hashchange")));
  }
  const features = await page.textContent("#ent-decisions table");
  if (!features.includes("rule:credential-stuffing-ip") || !features.includes("=")) throw new Error("no decision story: " + features);
  const plotted = await page.evaluate(() => document.querySelectorAll("#ent-plot .u-legend tr").length);
  if (plotted < 3) throw new Error("the timeline has " + plotted + " series");
  await page.screenshot({ path: OUT + "/entity.png", fullPage: true });

  step("allow the address from its page");
  await page.fill("#ent-act input[name=reason]", "cleared by an analyst in the console");
  await page.click("#ent-act button[value=allow]");
  await page.waitForFunction(() => document.getElementById("ent-act-result").textContent.startsWith("done"), null, { timeout: 15000 });
  await page.locator("#ent-decision", { hasText: "allow" }).waitFor({ timeout: 15000 });
  await page.screenshot({ path: OUT + "/after-allow.png", fullPage: true });

  step("decisions and their collateral, sorted on the server");
  await page.click("nav a[data-view=decisions]");
  await page.locator("#dec-table tbody tr", { hasText: SECOND_ATTACKER }).first().waitFor({ timeout: 15000 });
  await page.click("#dec-table th[data-sort=refused]");
  await page.waitForFunction(() => document.getElementById("dec-page").textContent.includes("by refused"), null, { timeout: 15000 });
  await page.screenshot({ path: OUT + "/decisions.png", fullPage: true });

  step("rules and models fired today");
  await page.click("nav a[data-view=rules]");
  await page.locator("#fired tbody tr", { hasText: "rule:credential-stuffing-ip" }).first().waitFor({ timeout: 15000 });
  await page.locator("#fired tbody tr", { hasText: "manual:ops" }).first().waitFor({ timeout: 15000 });
  await page.locator("#histograms h3", { hasText: "model:ip-classifier" }).first().waitFor({ timeout: 30000 });
  await page.waitForSelector("#histograms canvas", { timeout: 15000 });
  await page.screenshot({ path: OUT + "/rules.png", fullPage: true });

  step("a shipped investigation, one click away, and a chart of a result");
  await page.click("nav a[data-view=query]");
  await page.click("button[data-investigation=rules-fired-today]");
  await page.click("#sql-form button[type=submit]");
  await page.locator("#sql-result tbody tr", { hasText: "rule:credential-stuffing-ip" }).first().waitFor({ timeout: 30000 });
  await page.fill("#sql-form textarea", "SELECT client_ip, count(*) AS requests, sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors FROM events GROUP BY client_ip ORDER BY client_ip");
  await page.click("#sql-form button[type=submit]");
  await page.locator("#sql-result tbody tr", { hasText: SECOND_ATTACKER }).first().waitFor({ timeout: 30000 });
  await page.waitForSelector("#sql-chart canvas", { timeout: 15000 });
  await page.screenshot({ path: OUT + "/query.png", fullPage: true });

  if (errors.length) throw new Error("errors on the page: " + errors.join("; "));
  console.log("console: ok");
} catch (e) {
  // What the page said, and how it looked, when it went wrong.
  if (page) {
    const said = await page.evaluate(() => [...document.querySelectorAll("[role=status], #status")].map(x => x.id + ": " + x.textContent).join("\n")).catch(() => "");
    console.log("page status:\n" + said + "\nerrors: " + errors.join("; "));
    await page.screenshot({ path: OUT + "/failure.png", fullPage: true }).catch(() => {});
  }
  throw e;
} finally {
  await browser.close();
}
