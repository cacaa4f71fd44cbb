//! A submitter that works too (self-dispatch on, the job's capability
//! offered) is killed (SIGKILL) while another worker runs one of its jobs,
//! and restarted on the same data dir. Its journal names the worker of the
//! job's last attempt; the restarted daemon must give the job back to that
//! worker, which re-attaches, and not run it itself although its own slot is
//! free the moment it starts: the job runs once, and its envelope names the
//! worker that ran it.
//!
//! To get the first attempt onto the other worker deterministically, the
//! submitter's one slot is taken by a `sleep` job only it runs; that job is
//! cancelled (and its outcome journaled) before the kill, so the restarted
//! daemon resumes just the one job.

use std::path::Path;

use jobmesh_peer::control::{self, PeersReply, Request};
use jobmesh_testkit::faults::{detached, logging_handler};
use jobmesh_testkit::process::{daemon, self_dispatching_daemon, signal_server, wait_capable};
use jobmesh_testkit::{eventually, init_tracing, within, PeerGuard};
use serde_json::{json, Value};
use uuid::Uuid;

/// How many times a logging handler's log says it started `job_id`.
fn runs(log: &Path, job_id: Uuid) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.trim() == job_id.to_string())
        .count()
}

/// Submits `capability` with `input`, detached, to the daemon at `sock`.
async fn submit(sock: &Path, capability: &str, input: Value) -> Uuid {
    let v = control::request(sock, &detached(capability, input))
        .await
        .expect("a detached submit");
    v["job_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no job id in {v}"))
}

/// The daemon at `sock`'s peer id.
async fn peer_id(sock: &Path) -> String {
    let v = control::request(sock, &Request::Peers)
        .await
        .expect("the peer list");
    let reply: PeersReply = serde_json::from_value(v).expect("a peer list");
    reply.me.id.to_string()
}

/// Asks the daemon at `sock` for `job_id`'s journaled state until `done`
/// holds of it (at most the test deadline); returns that answer.
async fn wait_result(
    sock: &Path,
    job_id: Uuid,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let req = Request::Result {
        job_id,
        out: None,
        out_dir: None,
    };
    within(what, async {
        loop {
            if let Ok(v) = control::request(sock, &req).await {
                if done(&v) {
                    return v;
                }
            }
            // Polled: a journal write is no event on the control socket.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

fn running_on(v: &Value, worker: &str) -> bool {
    v["status"] == "running" && v["worker"] == worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_job_goes_back_to_the_worker_that_holds_it_not_to_itself() {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    // The same handler on both daemons, each logging to its own file: the
    // logs say who ran the job, and how often.
    let (w_dir, s_dir) = (dir.path().join("w"), dir.path().join("s"));
    std::fs::create_dir_all(&w_dir).expect("w dir");
    std::fs::create_dir_all(&s_dir).expect("s dir");
    let (w_config, w_log) = logging_handler(&w_dir, "work", "4", "json");
    let (s_config, s_log) = logging_handler(&s_dir, "work", "4", "json");
    let w_config = w_config.to_str().expect("utf-8");
    let s_config = s_config.to_str().expect("utf-8");

    let (_server, url) = signal_server();
    let _worker = daemon(
        &url,
        "resume",
        "w",
        "work",
        dir.path(),
        &["--config", w_config, "--slots", "1"],
    );
    let s_args = ["--config", s_config, "--slots", "1"];
    let submitter = self_dispatching_daemon(&url, "resume", "s", "work,sleep", dir.path(), &s_args);
    let watcher = PeerGuard::start(&url, "resume", "watcher", &[], 0);
    watcher.wait_capable("work", 2).await;
    let s_sock = dir.path().join("s.sock");
    let w_sock = dir.path().join("w.sock");
    // The submitter must see the worker before the job can go there.
    wait_capable(&s_sock, "work", 1).await;
    let (w_id, s_id) = (peer_id(&w_sock).await, peer_id(&s_sock).await);

    // The submitter's one slot is taken by a job only it can run ...
    let blocker = submit(&s_sock, "sleep", json!({ "ms": 120_000 })).await;
    wait_result(
        &s_sock,
        blocker,
        "the blocker to run on the submitter",
        |v| running_on(v, &s_id),
    )
    .await;
    // ... so the job goes to the worker, and its attempt there is journaled.
    let job = submit(&s_sock, "work", json!({ "n": 1 })).await;
    wait_result(
        &s_sock,
        job,
        "the job's attempt on the worker to be journaled",
        |v| running_on(v, &w_id),
    )
    .await;
    eventually("the worker to start the job", || runs(&w_log, job) == 1).await;
    // The blocker ends (journaled) so that the restart resumes only the job.
    let v = control::request(&s_sock, &Request::Cancel { job_id: blocker })
        .await
        .expect("cancel");
    assert_eq!(v["cancelled"], true, "{v}");
    wait_result(&s_sock, blocker, "the blocker's end to be journaled", |v| {
        v["status"] == "cancelled"
    })
    .await;

    submitter.kill();
    let _submitter =
        self_dispatching_daemon(&url, "resume", "s", "work,sleep", dir.path(), &s_args);

    let envelope = wait_result(&s_sock, job, "the job's outcome", |v| {
        !matches!(v["status"].as_str(), Some("queued" | "running"))
    })
    .await;
    assert_eq!(envelope["status"], "completed", "{envelope}");
    assert_eq!(envelope["result"], json!({ "n": 1 }), "{envelope}");
    let (on_w, on_s) = (runs(&w_log, job), runs(&s_log, job));
    assert_eq!(
        (on_w, on_s),
        (1, 0),
        "the job ran {on_w} times on the worker and {on_s} on the restarted submitter: {envelope}"
    );
    assert_eq!(envelope["worker"]["id"], w_id.as_str(), "{envelope}");
    assert_eq!(envelope["worker"]["name"], "w", "{envelope}");
}
