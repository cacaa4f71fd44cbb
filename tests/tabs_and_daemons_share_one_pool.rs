//! Browser tabs and Rust daemons in one pool, jobs going every way: a
//! daemon's jobs run on tabs and daemons, a tab's on the other tab, on
//! daemons and on itself; `peer peers` and the dashboard list the tabs. A
//! tab closed in the middle of its jobs loses none of them: each is retried
//! on a daemon and delivered once. A cancel from a tab stops the Rust
//! handler. A tab observes the jobs of the whole pool, and `peer watch
//! --pool` those a tab runs.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};

use jobmesh_testkit::process::{
    daemon, daemon_serving, expect_exit, run_peer, signal_server, stdout_json, submit_lines,
    wait_capable, BrowserTab, Watch,
};
use serde_json::{json, Value};

/// The envelopes `peer submit --each --json` printed.
fn envelopes(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v.get("job_id").is_some())
        .collect()
}

/// The first snapshot the dashboard at `addr` streams, as text.
fn dashboard_snapshot(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the dashboard");
    write!(s, "GET /api/dashboard HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("send");
    BufReader::new(s)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("data:").map(str::to_owned))
        .expect("a snapshot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_go_every_way_between_tabs_and_daemons() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _d1 = daemon(&url, "mixed", "d1", "echo", dir.path(), &[]);
    let _d2 = daemon(&url, "mixed", "d2", "echo", dir.path(), &[]);
    let (_board, http) = daemon_serving("--http", &url, "mixed", "board", dir.path(), &[]);
    let mut t1 = BrowserTab::open(&url);
    let mut t2 = BrowserTab::open(&url);
    t1.step(json!({ "op": "work", "pool": "mixed", "name": "tab-1" }));
    t2.step(json!({ "op": "work", "pool": "mixed", "name": "tab-2" }));
    let board = dir.path().join("board.sock");
    wait_capable(&board, "echo", 4).await;
    let board = board.to_str().expect("utf-8");
    let everyone: BTreeSet<&str> = ["d1", "d2", "tab-1", "tab-2"].into();

    // A daemon's jobs, round-robin over the four workers.
    let out = submit_lines(
        board,
        "echo",
        &"{\"n\":1}\n".repeat(12),
        &["--json", "--strategy", "round-robin"],
    );
    expect_exit(&out, 0);
    let ran = envelopes(&out);
    assert_eq!(ran.len(), 12);
    assert!(ran
        .iter()
        .all(|e| e["status"] == "completed" && e["result"] == json!({ "n": 1 })));
    let workers: BTreeSet<&str> = ran
        .iter()
        .filter_map(|e| e["worker"]["name"].as_str())
        .collect();
    assert_eq!(workers, everyone, "{ran:?}");

    // A tab's jobs, round-robin over the same four: itself among them.
    t1.wait_workers(&["d1", "d2", "tab-1", "tab-2"]).await;
    let got = t1.step(
        json!({ "op": "submit_many", "type": "echo", "count": 12, "strategy": "round-robin" }),
    );
    let workers: BTreeSet<&str> = got["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(workers, everyone, "{got}");

    // The daemons list the tabs as peers, the dashboard as workers.
    let peers = stdout_json(&run_peer(&["peers", "--json", "--control", board]));
    let names: BTreeSet<&str> = peers["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.is_superset(&everyone), "{peers}");
    let snapshot = dashboard_snapshot(&http);
    assert!(
        snapshot.contains("\"tab-1\"") && snapshot.contains("\"tab-2\""),
        "{snapshot}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_closed_mid_job_loses_nothing_and_delivers_nothing_twice() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _s = daemon(&url, "closing", "s", "", dir.path(), &[]);
    let mut tab = BrowserTab::open(&url);
    tab.step(json!({ "op": "work", "pool": "closing", "name": "tab-1", "slots": 4 }));
    let control = dir.path().join("s.sock");
    wait_capable(&control, "sleep", 1).await;
    let control = control.to_str().expect("utf-8").to_owned();

    // Four jobs go to the tab, the only worker; then a daemon joins.
    let submitting = std::thread::spawn({
        let control = control.clone();
        move || submit_lines(&control, "sleep", &"{\"ms\":8000}\n".repeat(4), &["--json"])
    });
    jobmesh_testkit::eventually("the tab runs the four jobs", || {
        let jobs = stdout_json(&run_peer(&["jobs", "--json", "--control", &control]));
        jobs.as_array()
            .into_iter()
            .flatten()
            .filter(|j| j["state"] == "running")
            .count()
            == 4
    })
    .await;
    let _w = daemon(&url, "closing", "w", "sleep", dir.path(), &[]);
    wait_capable(std::path::Path::new(&control), "sleep", 2).await;

    tab.step(json!({ "op": "crash" }));
    let out = submitting.join().expect("the submitting thread");
    expect_exit(&out, 0);
    let ran = envelopes(&out);
    assert_eq!(ran.len(), 4, "one envelope per job: {ran:?}");
    let ids: BTreeSet<&str> = ran.iter().filter_map(|e| e["job_id"].as_str()).collect();
    assert_eq!(ids.len(), 4, "{ran:?}");
    for e in &ran {
        assert_eq!(e["status"], "completed", "{e}");
        assert_eq!(e["worker"]["name"], "w", "{e}");
        assert_eq!(e["attempts"], 2, "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_a_tab_stops_the_rust_handler() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _w = daemon(&url, "cancels", "w", "sleep", dir.path(), &[]);
    let mut tab = BrowserTab::open(&url);
    tab.step(json!({ "op": "join", "pool": "cancels" }));
    let stats = |tab: &mut BrowserTab| tab.step(json!({ "op": "workers" }))["stats"]["w"].clone();
    jobmesh_testkit::eventually("the tab sees the worker", || {
        stats(&mut tab)["running"] == 0
    })
    .await;
    let before = stats(&mut tab)["seq"]
        .as_u64()
        .expect("a stats sequence number");

    // A minute's sleep, cancelled at its first progress.
    let got = tab.step(json!({ "op": "submit", "type": "sleep", "payload": { "ms": 60000 }, "cancel_after_progress": true }));
    assert_eq!(got["failed"], "cancelled", "{got}");
    // The handler stopped: the worker's stats moved on (the job started)
    // and its slot is free again, long before the minute.
    jobmesh_testkit::eventually("the worker's slot is free again", || {
        let now = stats(&mut tab);
        now["seq"].as_u64() > Some(before) && now["running"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_observes_the_pool_and_peer_watch_observes_a_tab() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _w = daemon(&url, "watched", "w", "echo", dir.path(), &[]);
    let _s = daemon(&url, "watched", "s", "", dir.path(), &[]);
    let mut worker = BrowserTab::open(&url);
    worker.step(json!({ "op": "work", "pool": "watched", "name": "tab-w" }));
    let mut observer = BrowserTab::open(&url);
    observer.step(json!({ "op": "join", "pool": "watched" }));
    let control = dir.path().join("s.sock");
    wait_capable(&control, "echo", 2).await;
    let control = control.to_str().expect("utf-8");
    observer.step(json!({ "op": "observe" }));
    let watch = Watch::start(control, &["--pool"]);

    let out = submit_lines(
        control,
        "echo",
        &"{}\n".repeat(6),
        &["--json", "--strategy", "round-robin"],
    );
    expect_exit(&out, 0);
    let ran = envelopes(&out);
    let on_tab: BTreeSet<&str> = ran
        .iter()
        .filter(|e| e["worker"]["name"] == "tab-w")
        .filter_map(|e| e["job_id"].as_str())
        .collect();
    assert!(
        !on_tab.is_empty() && on_tab.len() < 6,
        "both workers ran some: {ran:?}"
    );

    // The observing tab hears every job start and complete, on both workers.
    let mut heard: Vec<Value> = Vec::new();
    jobmesh_testkit::eventually("the tab hears all six jobs complete", || {
        let got = observer.step(json!({ "op": "events" }));
        heard.extend(got["events"].as_array().into_iter().flatten().cloned());
        heard.iter().filter(|e| e["event"] == "completed").count() == 6
    })
    .await;
    for job in &ran {
        let events: Vec<&str> = heard
            .iter()
            .filter(|e| e["job_id"] == job["job_id"])
            .filter_map(|e| e["event"].as_str())
            .collect();
        assert_eq!(events.first(), Some(&"started"), "{job}: {events:?}");
        assert_eq!(events.last(), Some(&"completed"), "{job}: {events:?}");
        let by = heard
            .iter()
            .find(|e| e["job_id"] == job["job_id"])
            .map(|e| e["worker"]["name"].clone());
        assert_eq!(by, Some(job["worker"]["name"].clone()), "{job}");
    }
    // peer watch --pool hears the tab's jobs end, named by the tab.
    let mut ended = BTreeSet::new();
    watch.until("the tab's jobs end", |v| {
        if v["event"] == "finished" || v["event"] == "completed" {
            if let Some(job) = v["job_id"].as_str().filter(|j| on_tab.contains(j)) {
                assert_eq!(v["worker_name"], "tab-w", "{v}");
                ended.insert(job.to_owned());
            }
        }
        ended.len() == on_tab.len()
    });
}
