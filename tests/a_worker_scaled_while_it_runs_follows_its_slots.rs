//! `peer scale --slots N` on a running worker, over real WebRTC: 200 jobs
//! wait for a worker with one slot; scaled to 8 it runs 8 at once, and the
//! submitter's pool view says 8 slots; scaled to 2 it cancels nothing and
//! its running jobs fall to 2 as they end; every job completes, once. (The
//! simulator's twin, crates/sim/tests/scaling.rs, checks the throughput of
//! each phase, in virtual time.)

use jobmesh_testkit::process::{
    daemon, expect_exit, run_peer, signal_server, stdout_json, submit_lines, wait_capable,
};
use serde_json::Value;

/// The worker `w1` as the daemon at `control` sees it: (slots, running).
fn seen(control: &str) -> (u64, u64) {
    let out = run_peer(&["peers", "--json", "--control", control]);
    expect_exit(&out, 0);
    let v = stdout_json(&out);
    let w = v["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&v["me"]))
        .find(|p| p["name"] == "w1")
        .cloned()
        .unwrap_or(Value::Null);
    (
        w["stats"]["slots"].as_u64().unwrap_or(0),
        w["stats"]["running"].as_u64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_scaled_up_and_down_runs_as_many_jobs_as_its_slots() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _w = daemon(&url, "scale", "w1", "sleep", dir.path(), &["--slots", "1"]);
    let _s = daemon(&url, "scale", "s", "", dir.path(), &[]);
    let sock = |n: &str| {
        dir.path()
            .join(format!("{n}.sock"))
            .to_str()
            .expect("utf-8")
            .to_owned()
    };
    let (w, s) = (sock("w1"), sock("s"));
    wait_capable(std::path::Path::new(&s), "sleep", 1).await;

    // 200 jobs of 150 ms each, all at once from the submitter.
    let submitting = std::thread::spawn({
        let s = s.clone();
        move || submit_lines(&s, "sleep", &"{\"ms\":150}\n".repeat(200), &["--json"])
    });
    jobmesh_testkit::eventually("one job runs on the 1-slot worker", || seen(&s) == (1, 1)).await;

    let out = run_peer(&["scale", "--slots", "8", "--control", &w]);
    expect_exit(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "slots 1 → 8");
    jobmesh_testkit::eventually("the submitter sees 8 slots, all busy", || {
        seen(&s) == (8, 8)
    })
    .await;

    let out = run_peer(&["scale", "--slots", "2", "--control", &w]);
    expect_exit(&out, 0);
    jobmesh_testkit::eventually("the extra slots retire as their jobs end", || {
        seen(&s) == (2, 2)
    })
    .await;

    // Every job completed (exit 0, one envelope each) and ran once.
    let out = submitting.join().expect("the submitting thread");
    expect_exit(&out, 0);
    let envelopes: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v.get("job_id").is_some())
        .collect();
    assert_eq!(envelopes.len(), 200);
    assert!(envelopes
        .iter()
        .all(|e| e["status"] == "completed" && e["attempts"] == 1));
    let status = stdout_json(&run_peer(&["status", "--json", "--control", &w]));
    let sleep = status["capabilities"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["capability"] == "sleep")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        (sleep["completed"].as_u64(), sleep["failed"].as_u64()),
        (Some(200), Some(0)),
        "{status}"
    );

    // Out of range: refused with the reason, nothing changes.
    let out = run_peer(&["scale", "--slots", "0", "--control", &w]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
