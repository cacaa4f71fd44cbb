import { joinPool } from "/js/jobmesh.js";

const $ = (id) => /** @type {HTMLInputElement} */ (document.getElementById(id));
const status = (state, text) => Object.assign($("status"), { textContent: text }).setAttribute("data-state", state);
const signal = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
$("pool").value = new URLSearchParams(location.search).get("pool") ?? "default";
/** @type {import("/js/jobmesh.js").Pool | null} */
let pool = null;

$("submit").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    if (!pool) {
      status("joining", `Joining pool ${$("pool").value}…`);
      pool = await joinPool({ signal, pool: $("pool").value, invitation: $("invitation").value.trim() || undefined });
      addEventListener("pagehide", () => pool?.close({ timeout: 1 }));
    }
    const workers = pool.workers.filter((w) => w.capabilities.includes("thumbnail"));
    status("joined", `In pool ${$("pool").value}: ${workers.length} thumbnail workers (${workers.map((w) => w.name).join(", ")}).`);
  } catch (e) {
    return status("failed", `Could not join: ${e.message}`);
  }
  for (const file of $("files").files ?? []) {
    const li = document.createElement("li");
    li.textContent = `${file.name}: sending ${file.size} bytes…`;
    $("results").append(li);
    const ticket = pool.submit({ type: "thumbnail", payload: { width: Number($("width").value) }, files: [file], timeout: 60 });
    ticket.onProgress = (p) => (li.textContent = `${file.name}: ${p.stage ?? ""} ${p.percent ?? ""}%`);
    ticket.result.then(
      (r) => {
        const img = document.createElement("img");
        img.src = URL.createObjectURL(ticket.files[0]);
        img.alt = `thumbnail of ${file.name}`;
        li.replaceChildren(img, `${file.name}: ${r.width}×${r.height} ${r.format} by ${ticket.worker?.name}`);
        Object.assign(li.dataset, { state: "done", width: r.width, height: r.height, worker: ticket.worker?.name ?? "" });
      },
      (e) => {
        li.textContent = `${file.name}: ${e.status}: ${e.message}`;
        li.dataset.state = "failed";
      },
    );
  }
});
