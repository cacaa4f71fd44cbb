// The example pages the signal-server serves (examples/browser), driven as
// a user would, for tests/the_example_pages_make_thumbnails_in_tabs.rs.
//
//   node tests/browser/example.mjs HTTP_BASE
//   stdin:  {"op":"worker","pool":"pics","name":"tab-thumbs"}   opens thumbnail-worker.html and joins
//                                                stdout: {"status":…}
//           {"op":"submit","pool":"pics","files":[paths],"width":N}   opens thumbnail-submit.html,
//                 picks the files and submits; once every one ended
//                                                stdout: {"results":[{"state","width","height","worker","text"}]}
// Page errors go to stderr; the process ends when stdin ends.

import { launch, reportErrors, serveSteps } from "./chromium.mjs";

const [base] = process.argv.slice(2);
if (!base) {
  console.error("usage: node example.mjs HTTP_BASE (the signal-server's http://host:port)");
  process.exit(2);
}
const browser = await launch();
const DEADLINE_MS = 60_000;

await serveSteps({
  worker: async ({ pool, name }) => {
    const page = reportErrors(await browser.newPage());
    await page.goto(`${base}/examples/thumbnail-worker.html?pool=${encodeURIComponent(pool)}`);
    await page.fill("#name", name);
    await page.click("button");
    await page.locator('#status[data-state="working"]').waitFor({ timeout: DEADLINE_MS });
    return { status: await page.textContent("#status") };
  },
  submit: async ({ pool, files, width }) => {
    const page = reportErrors(await browser.newPage());
    await page.goto(`${base}/examples/thumbnail-submit.html?pool=${encodeURIComponent(pool)}`);
    await page.setInputFiles("#files", files);
    await page.fill("#width", String(width));
    await page.click("button");
    const ended = page.locator('#results li[data-state="done"], #results li[data-state="failed"]');
    await ended.nth(files.length - 1).waitFor({ timeout: DEADLINE_MS });
    const results = await page.locator("#results li").evaluateAll((lis) =>
      lis.map((li) => ({ state: li.dataset.state, width: Number(li.dataset.width), height: Number(li.dataset.height), worker: li.dataset.worker, text: li.textContent })),
    );
    return { results };
  },
});
await browser.close();
