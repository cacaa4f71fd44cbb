// What the browser test scripts share: Debian's chromium, headless, and
// the step loop (one JSON step a line on stdin, one JSON answer a line on
// stdout; a step that throws answers {"error": …}).

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

/**
 * Headless chromium, as a user's browser is: a page's host candidates are
 * random mDNS names (.local), not addresses (docs/browser.md).
 */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
}

/** Reports a page's errors on stderr. @param {import("playwright-core").Page} page */
export function reportErrors(page) {
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && console.error(`console: ${m.text()}`));
  return page;
}

/** Runs the steps of stdin with `ops` until stdin ends. @param {Record<string, (step: any) => Promise<object>>} ops */
export async function serveSteps(ops) {
  for await (const line of createInterface({ input: process.stdin })) {
    let answer;
    try {
      const step = JSON.parse(line);
      if (!ops[step.op]) throw new Error(`no step ${step.op}`);
      answer = await ops[step.op](step);
    } catch (e) {
      answer = { error: String(e) };
    }
    console.log(JSON.stringify(answer));
  }
}
