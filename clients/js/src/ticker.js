// A timer that a background tab does not starve. Browsers throttle the
// timers of hidden tabs (Chrome: at most once a second, then once a
// minute after five minutes hidden), which would let the leases of the
// jobs a tab runs run out (a heartbeat is due every second). A dedicated
// worker's timers are not throttled that way, and its messages wake the
// page: so the tick comes from one, where the page may start workers
// (a Content-Security-Policy may forbid `blob:` workers), else from
// setInterval.

const SOURCE = "onmessage = (e) => setInterval(() => postMessage(0), e.data);";

/**
 * Calls `fn` every `ms` milliseconds until the returned function is called.
 * @param {number} ms @param {() => void} fn @returns {() => void} stop
 */
export function every(ms, fn) {
  let interval = 0;
  const fallback = () => {
    if (!interval) interval = setInterval(fn, ms);
  };
  /** @type {Worker | null} */
  let worker = null;
  if (typeof Worker === "function" && typeof URL.createObjectURL === "function") {
    try {
      const url = URL.createObjectURL(new Blob([SOURCE], { type: "text/javascript" }));
      worker = new Worker(url);
      URL.revokeObjectURL(url);
      worker.onmessage = () => fn();
      worker.onerror = () => {
        worker?.terminate();
        worker = null;
        fallback();
      };
      worker.postMessage(ms);
    } catch {
      worker = null;
      fallback();
    }
  } else fallback();
  return () => {
    worker?.terminate();
    clearInterval(interval);
  };
}
