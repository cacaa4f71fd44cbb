//! A pool-wide observer over real WebRTC: `peer watch --all` on a daemon
//! that runs no job hears every job of both workers — started, then
//! completed or failed with its error — streamed by the workers themselves.

use std::collections::HashSet;

use jobmesh_testkit::process::{
    daemon, signal_server, submit_each, submit_timing_out, wait_capable, Heard, Watch,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_watch_all_hears_every_job_of_every_worker() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _w1 = daemon(&url, "observed", "w1", "echo,sleep", dir.path(), &[]);
    let _w2 = daemon(&url, "observed", "w2", "echo", dir.path(), &[]);
    let _s = daemon(&url, "observed", "s", "", dir.path(), &[]);
    let _o = daemon(&url, "observed", "o", "", dir.path(), &[]);
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    wait_capable(&sock("s"), "echo", 2).await;
    wait_capable(&sock("o"), "echo", 2).await;

    // `--pool` without a name, as the issue spelled it (the same as `--all`).
    let watch = Watch::start(sock("o").to_str().expect("utf-8"), &["--pool"]);

    let control = sock("s");
    let control = control.to_str().expect("utf-8");
    assert_eq!(submit_each(control, "echo", 20), Some(0));
    // One that fails on its worker: the handler is stopped at its timeout.
    submit_timing_out(control);

    // Every job's start and end, from the worker that ran it (the history
    // covers what ran before the observer had subscribed).
    let mut heard = Heard::default();
    watch.until("every job's end", |v| {
        heard.record(v);
        if matches!(v["event"].as_str(), Some("failed" | "cancelled")) {
            assert_eq!(v["capability"], "sleep", "{v}");
        }
        heard.ended() >= 21
    });
    drop(watch);
    let jobs = heard.0;
    let workers: HashSet<&String> = jobs.values().flat_map(|(w, _)| w).collect();
    assert_eq!(workers.len(), 2, "both workers heard: {workers:?}");
    for (job, (w, kinds)) in &jobs {
        assert_eq!(w.len(), 1, "{job} from one worker: {w:?}");
        assert_eq!(
            kinds.first().map(String::as_str),
            Some("started"),
            "{job}: {kinds:?}"
        );
    }
    let completed = jobs
        .values()
        .filter(|(_, k)| k.last().map(String::as_str) == Some("completed"))
        .count();
    assert_eq!(completed, 20, "{jobs:?}");
}
