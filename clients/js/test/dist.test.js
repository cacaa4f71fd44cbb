// The shipped bundle (dist/jobmesh.js, which the signal-server embeds) is
// the build of the sources as they are: `npm run build` after a change.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { build } from "esbuild";

test("dist/jobmesh.js is built from the current sources", async () => {
  const fresh = await build({
    entryPoints: [new URL("../src/index.js", import.meta.url).pathname],
    bundle: true,
    format: "esm",
    target: "es2022",
    legalComments: "inline",
    write: false,
    outfile: "dist/jobmesh.js",
    absWorkingDir: new URL("..", import.meta.url).pathname,
  });
  const shipped = await readFile(new URL("../dist/jobmesh.js", import.meta.url), "utf8");
  assert.equal(shipped, fresh.outputFiles[0].text, "dist/jobmesh.js is stale: run `npm run build` in clients/js");
});
