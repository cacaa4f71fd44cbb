import { joinPool } from "/js/jobmesh.js";
import { thumbnail } from "./thumbnail.js";

const $ = (id) => /** @type {HTMLInputElement} */ (document.getElementById(id));
const status = (state, text) => Object.assign($("status"), { textContent: text }).setAttribute("data-state", state);
const signal = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
$("pool").value = new URLSearchParams(location.search).get("pool") ?? "default";

$("join").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("join").querySelector("button").disabled = true;
  status("joining", `Joining pool ${$("pool").value}…`);
  try {
    const pool = await joinPool({
      signal,
      pool: $("pool").value,
      name: $("name").value || undefined,
      invitation: $("invitation").value.trim() || undefined,
      capabilities: ["thumbnail"],
      concurrency: Number($("slots").value),
      handler: async (input, ctx) => {
        const li = document.createElement("li");
        li.textContent = `${ctx.jobId.slice(0, 8)}: ${ctx.files[0]?.size ?? 0} bytes in…`;
        $("jobs").prepend(li);
        try {
          const r = await thumbnail(input, ctx);
          li.textContent = `${ctx.jobId.slice(0, 8)}: ${r.width}×${r.height} ${r.format}, ${r.bytes} bytes`;
          li.dataset.state = "done";
          return r;
        } catch (e) {
          li.textContent = `${ctx.jobId.slice(0, 8)}: failed: ${e.message}`;
          li.dataset.state = "failed";
          throw e;
        }
      },
    });
    status("working", `Working in pool ${$("pool").value} as ${pool.signal.join.name} (${pool.id}); ${pool.workers.length} workers in the pool.`);
    addEventListener("pagehide", () => pool.close({ timeout: 1 }));
  } catch (e) {
    status("failed", `Could not join: ${e.message}`);
    $("join").querySelector("button").disabled = false;
  }
});
