//! `peer status`: the pool at a glance, counted from the workers' own
//! stats (finished jobs per capability) as the pool view carries them.

use jobmesh_testkit::process::{
    daemon, peer, signal_server, stdout_json, submit_each, submit_timing_out, wait_capable,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_status_counts_workers_slots_and_finished_jobs_per_capability() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _w1 = daemon(
        &url,
        "status",
        "w1",
        "echo,sleep",
        dir.path(),
        &["--slots", "3"],
    );
    let _w2 = daemon(&url, "status", "w2", "echo", dir.path(), &["--slots", "1"]);
    let _s = daemon(&url, "status", "s", "", dir.path(), &[]);
    let sock = dir.path().join("s.sock");
    wait_capable(&sock, "echo", 2).await;
    let control = sock.to_str().expect("utf-8");

    assert_eq!(submit_each(control, "echo", 20), Some(0));
    // One that fails on its worker: the handler is stopped at its timeout.
    submit_timing_out(control);

    // The workers' stats reach this daemon through the signal-server.
    let mut report = serde_json::Value::Null;
    jobmesh_testkit::eventually("the pool's figures in peer status", || {
        let out = peer(&["status", "--json", "--control", control])
            .output()
            .expect("peer runs");
        if !out.status.success() {
            return false;
        }
        report = stdout_json(&out);
        report["completed"] == 20 && report["failed"] == 1
    })
    .await;
    assert_eq!(report["workers"], 2, "{report}");
    assert_eq!(report["submitters"], 1, "{report}");
    assert_eq!(report["slots"], 4, "{report}");
    let cap = |name: &str| {
        report["capabilities"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["capability"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {report}"))
    };
    let echo = cap("echo");
    assert_eq!(
        (echo["workers"].as_u64(), echo["slots"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(
        (echo["completed"].as_u64(), echo["failed"].as_u64()),
        (Some(20), Some(0))
    );
    let sleep = cap("sleep");
    assert_eq!(
        (sleep["workers"].as_u64(), sleep["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(report["me"]["name"], "s");
    assert_eq!(report["me"]["recent"]["completed"], 20, "{report}");
    assert_eq!(report["me"]["recent"]["timed_out"], 1, "{report}");

    // And for people: a table with the same figures.
    let out = peer(&["status", "--control", control])
        .output()
        .expect("peer runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("pool: 2 workers, 1 submitter; 0 of 4 slots busy"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().take(6).collect::<Vec<_>>()
                == ["echo", "2", "4", "0", "20", "0"]),
        "{text}"
    );
}
