// The submitting side (docs/protocol.md, "The claim protocol"): a job goes
// to a capable worker with room, as a numbered attempt; `accepted`,
// `progress` and `result` must name the current attempt; `busy`,
// `unknown_capability` and `draining` refusals send it elsewhere without
// spending a retry; a worker silent for the lease (5 s: nothing at all
// heard from it on its link) loses the attempt;
// a retryable failure is retried while retries last; `received` answers
// every result. Input files go as blobs announced just before the submit
// and sent once the worker accepted; output files arrive before the result.

import { Incoming, asBlobs, describe, problemWith, sendBlobs } from "./blobs.js";
import { allows } from "./trust.js";

/** A worker silent this long loses its attempt. */
const LEASE_MS = 5000;
/** Refusals that send a job to another worker without spending a retry. */
const ELSEWHERE = new Set(["busy", "unknown_capability", "draining"]);
/** After every capable worker refused a job, it is offered again this much later. */
const RETRY_ROUND_MS = 200;

/**
 * @typedef {import("./view.js").PeerInfo} PeerInfo
 * @typedef {{type: string, payload?: any, files?: (Blob | ArrayBuffer | ArrayBufferView)[],
 *   timeout?: number, retries?: number, priority?: number, maxOutputBytes?: number,
 *   strategy?: string | ((workers: PeerInfo[], job: {type: string}) => PeerInfo | undefined)}} JobSpec
 */

/** A result's output blobs are at most this many bytes in all, by default. */
export const DEFAULT_MAX_OUTPUT_BYTES = 1024 ** 3;

/** Why a job ended without a result; `status` is the envelope's. */
export class JobError extends Error {
  /** @param {string} status @param {string} message */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * Picks a worker for `capability` among `workers` (not in `skip`), by
 * `strategy`: `least-loaded` (default), `random`, `round-robin`, or a
 * function of the candidates.
 * @param {PeerInfo[]} workers @param {string} capability @param {Set<string>} skip
 * @param {JobSpec["strategy"]} strategy @param {{next: number}} turn
 */
export function pick(workers, capability, skip, strategy, turn) {
  const capable = workers.filter(
    (w) => w.capabilities.includes(capability) && !skip.has(w.id) && !w.stats.draining && w.stats.slots > 0,
  );
  if (typeof strategy === "function") return strategy(capable, { type: capability });
  const roomy = capable.filter((w) => w.stats.running < w.stats.slots);
  const from = roomy.length ? roomy : capable;
  if (!from.length) return undefined;
  switch (strategy ?? "least-loaded") {
    case "random":
      return from[Math.floor(Math.random() * from.length)];
    case "round-robin":
      return from[turn.next++ % from.length];
    default:
      return from.reduce((a, b) => (b.stats.running / b.stats.slots < a.stats.running / a.stats.slots ? b : a));
  }
}

/** A submitted job: its outcome, its events, and cancel. */
export class Ticket {
  constructor(id) {
    this.id = id;
    /** The result's output files, set before `result` resolves. @type {File[]} */
    this.files = [];
    /** The worker that ran it, set before `result` resolves. @type {{id: string, name: string} | null} */
    this.worker = null;
    /** @type {((p: object) => void) | null} */ this.onProgress = null;
    /** @type {((value: any) => void) | null} */ this.onComplete = null;
    /** @type {((e: JobError) => void) | null} */ this.onFailed = null;
    /** @type {() => void} */ this.cancel = () => {};
    /** Resolves with the result value; rejects with a {@link JobError}. @type {Promise<any>} */
    this.result = new Promise((resolve, reject) => {
      this.settle = (/** @type {any} */ value, /** @type {JobError | null} */ error) => {
        if (error) {
          this.onFailed?.(error);
          reject(error);
        } else {
          this.onComplete?.(value);
          resolve(value);
        }
      };
    });
    this.result.catch(() => {});
  }
}

/**
 * Runs `spec` on the pool: `workers()` is the view's workers now,
 * `linkTo(peerId)` a trusted link (dialling if needed), and
 * `listen(jobId, onMessage)` routes that job's replies and chunks.
 * @param {JobSpec} spec
 * @param {{workers: () => PeerInfo[], linkTo: (id: string) => Promise<import("./link.js").Link>,
 *   listen: (jobId: string, onMessage: ((from: string, msg: any) => void) | null) => void,
 *   turn: {next: number}}} pool
 */
export function submit(spec, pool) {
  const jobId = crypto.randomUUID();
  const ticket = new Ticket(jobId);
  const timeoutMs = Math.max(1, Math.round((spec.timeout ?? 60) * 1000));
  let retries = spec.retries ?? 2;
  let attempt = 0;
  /** @type {{worker: string, name: string, link: import("./link.js").Link, outputs: Incoming | null} | null} */
  let current = null;
  let done = false;
  const skip = new Set();
  let lease = 0;
  let deadline = 0;
  /** Why the last worker tried could not take the job. @type {string | null} */
  let problem = null;
  /** Workers whose credential does not let them run it. */
  const denied = new Set();
  const inputs = asBlobs(spec.files ?? []);
  const described = describe(inputs); // hashed once, whatever the attempts
  described.catch(() => {});
  const send = (/** @type {object} */ m) => current?.link.send(m);

  const end = (value, error) => {
    if (done) return;
    done = true;
    clearTimeout(lease);
    clearTimeout(deadline);
    pool.listen(jobId, null);
    ticket.settle(value, error);
  };
  const renewLease = (ms = LEASE_MS) => {
    clearTimeout(lease);
    lease = setTimeout(() => {
      // Any word from the worker proves it alive: the messages about this
      // attempt may be stuck behind others (an earlier attempt's chunks).
      const quiet = performance.now() - (current?.link.heard ?? 0);
      if (current && quiet < LEASE_MS) return renewLease(LEASE_MS - quiet);
      const silent = current;
      send({ type: "cancel", job_id: jobId, attempt });
      again(`worker ${silent?.name} went silent`, true);
      // Nothing at all came over its link for the lease: a frozen worker,
      // or a connection stuck below us. Either way that link is no use;
      // the next attempt there dials a fresh one (the worker keeps a
      // finished result for it).
      silent?.link.closeSilent?.(`nothing heard from worker ${silent.name} for ${LEASE_MS / 1000} s: its link is closed and will be dialled again`);
    }, ms);
  };
  /** The next attempt, elsewhere; `spend`: it costs a retry. */
  const again = (why, spend) => {
    if (done) return;
    if (spend && retries-- <= 0) return end(undefined, new JobError("failed", why));
    if (current) skip.add(current.worker);
    current = null;
    place();
  };
  const place = async () => {
    const allowed = () => pool.workers().filter((w) => !denied.has(w.id));
    let worker = pick(allowed(), spec.type, skip, spec.strategy, pool.turn);
    if (!worker && skip.size) {
      // Every capable worker refused (busy, draining): ask them all again, after a pause.
      skip.clear();
      await new Promise((resolve) => setTimeout(resolve, RETRY_ROUND_MS));
      if (done) return;
      worker = pick(allowed(), spec.type, skip, spec.strategy, pool.turn);
    }
    if (!worker)
      return end(undefined, problem ? new JobError("failed", problem) : new JobError("no_worker", `no worker in the pool runs "${spec.type}"`));
    await offer(worker);
  };
  /** The next attempt, on `worker`. @param {{id: string, name: string}} worker */
  const offer = async (worker) => {
    attempt += 1;
    const mine = attempt;
    let blobs;
    try {
      blobs = await described;
    } catch (e) {
      return end(undefined, new JobError("rejected", `the input files could not be read: ${e?.message ?? e}`));
    }
    try {
      const link = await pool.linkTo(worker.id);
      if (done || mine !== attempt) return;
      if (link.grant && !allows(link.grant, "worker", spec.type)) {
        denied.add(worker.id);
        problem = `worker ${worker.name}'s credential does not let it run "${spec.type}"`;
        return again(problem, false);
      }
      current = { worker: worker.id, name: worker.name, link, outputs: null };
      if (blobs.length) send({ type: "blobs", job_id: jobId, attempt, direction: "input", blobs });
      send({ type: "submit", job_id: jobId, attempt, capability: spec.type, input: spec.payload ?? {}, timeout_ms: timeoutMs });
      renewLease();
    } catch (e) {
      skip.add(worker.id);
      problem = `could not reach or verify the identity of worker ${worker.name}: ${e?.message ?? e}`;
      if (mine === attempt) again(problem, false);
    }
  };
  /** Fails the current attempt after cancelling it on its worker. */
  const failAttempt = (why, retryable) => {
    send({ type: "cancel", job_id: jobId, attempt });
    if (retryable) again(why, true);
    else end(undefined, new JobError("failed", why));
  };

  pool.listen(jobId, (from, msg) => {
    if (done) return;
    if (msg.type === "held") {
      // The worker holds it (running or finished, on a link that came
      // back): the current attempt elsewhere is superseded, and a new one
      // re-attaches there.
      if (current?.worker === from && msg.attempt === attempt) return;
      send({ type: "cancel", job_id: jobId, attempt });
      const name = pool.workers().find((w) => w.id === from)?.name ?? from;
      current = null;
      return void offer({ id: from, name });
    }
    if (msg.type === "closed") {
      if (current?.worker === from) again(`the link to worker ${current.name} closed`, true);
      return;
    }
    if (!current || from !== current.worker || msg.attempt !== attempt) return; // stale
    renewLease();
    switch (msg.type) {
      case "accepted": {
        if (!inputs.length) return;
        const mine = current;
        // Each chunk goes out once the link drained below its threshold,
        // that is once the worker's side acknowledged what came before: a
        // worker taking our inputs is not silent, however long they take
        // (a slow link, a stall recovered by a retransmission).
        const sending = () => {
          if (done || current !== mine) return false;
          renewLease();
          return true;
        };
        sendBlobs(mine.link, { direction: 0, jobId, attempt }, inputs, sending).catch((e) => {
          if (current === mine) failAttempt(`the input files could not be sent: ${e?.message ?? e}`, false);
        });
        return;
      }
      case "progress":
        if (Object.keys(msg.progress ?? {}).length) ticket.onProgress?.(msg.progress);
        return;
      case "rejected":
        if (ELSEWHERE.has(msg.reason)) return again(msg.message, false);
        return end(undefined, new JobError("rejected", String(msg.message)));
      case "blobs": {
        if (msg.direction !== "output") return;
        const problem = problemWith(msg.blobs, spec.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES);
        if (problem) return failAttempt(`the result's files were refused: ${problem}`, false);
        current.outputs = new Incoming(msg.blobs);
        return;
      }
      case "chunk":
        if (msg.chunk.direction !== 1 || !current.outputs) return;
        try {
          current.outputs.accept(msg.chunk);
        } catch (e) {
          failAttempt(String(e?.message ?? e), true); // a damaged transfer: the next attempt sends it again
        }
        return;
      case "result": {
        send({ type: "received", receipts: [{ job_id: jobId, attempt }] });
        const o = msg.outcome ?? {};
        if (o.status === "ok") {
          const outputs = current.outputs;
          if (outputs && !outputs.complete) return again("the result's files did not all arrive", true);
          ticket.files = outputs?.files() ?? [];
          ticket.worker = { id: current.worker, name: current.name };
          return end(o.value, null);
        }
        if (o.retryable) return again(String(o.message), true);
        return end(undefined, new JobError("failed", String(o.message)));
      }
      default:
        return;
    }
  });
  deadline = setTimeout(() => {
    send({ type: "cancel", job_id: jobId, attempt });
    end(undefined, new JobError("timed_out", `timed out after ${timeoutMs} ms`));
  }, timeoutMs * ((spec.retries ?? 2) + 1));
  ticket.cancel = () => {
    send({ type: "cancel", job_id: jobId, attempt });
    end(undefined, new JobError("cancelled", "cancelled"));
  };
  place();
  return ticket;
}
