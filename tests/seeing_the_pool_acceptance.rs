//! Issue 18's acceptance, as one run: two workers and an observer; 100 jobs,
//! a few failing and one worker killed while it runs some. `peer watch
//! --all` hears every job end, the killed worker's running jobs as lost;
//! `peer status` counts the pool that is left; the submitter's metrics
//! count what its jobs did; and its dashboard, open in headless Chromium
//! throughout, shows all of it.

use jobmesh_testkit::process::{
    await_result, daemon, daemon_serving, expect_exit, http_get, metric, run_peer, signal_server,
    stdout_json, submit_each, submit_timing_out, wait_capable, DashboardInBrowser, Heard, Watch,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_an_observer_and_a_killed_worker_all_agree() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = |name: &str| {
        daemon(
            &url,
            "accept",
            name,
            "echo,sleep",
            dir.path(),
            &["--slots", "4"],
        )
    };
    let mut w1 = Some(worker("w1"));
    let _w2 = worker("w2");
    let _o = daemon(&url, "accept", "o", "", dir.path(), &[]);
    let (_s, http) = daemon_serving("--http", &url, "accept", "s", dir.path(), &[]);
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    wait_capable(&sock("s"), "sleep", 2).await;
    wait_capable(&sock("o"), "sleep", 2).await;
    let control = sock("s");
    let control = control.to_str().expect("utf-8");
    let watch = Watch::start(sock("o").to_str().expect("utf-8"), &["--all"]);
    // The submitter's dashboard, open from the start: in the end one worker
    // is left, and its counters are the pool's (w1's left with it; w1 had
    // finished nothing when it died, so w2 finished all 95 and the 5 that
    // timed out).
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("acceptance.png");
    let browser = DashboardInBrowser::open(
        &format!("http://{http}/"),
        &json!({ "workers": "1", "completed": "95", "failed": "5" }),
        &screenshot,
    );
    let mut heard = Heard::default();

    // 8 long jobs, detached: four start on each worker.
    let long: Vec<String> = (0..8)
        .map(|_| {
            let out = run_peer(&[
                "submit",
                "sleep",
                "--input",
                r#"{"ms":3000}"#,
                "--timeout",
                "30",
                "--detach",
                "--strategy",
                "round-robin",
                "--control",
                control,
            ]);
            expect_exit(&out, 0);
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect();
    let started_on = |h: &Heard, w: &str| {
        long.iter()
            .filter(|j| {
                h.0.get(*j)
                    .is_some_and(|(ws, k)| ws.contains(w) && k.contains(&"started".to_owned()))
            })
            .count()
    };
    // Every long job heard started (each observer says `lost` only for the
    // jobs it heard start: killing w1 sooner let the dashboard's observer
    // and this one disagree by a job).
    watch.until("every long job started, on both workers", |v| {
        heard.record(v);
        let (on1, on2) = (started_on(&heard, "w1"), started_on(&heard, "w2"));
        on1 >= 1 && on2 >= 1 && on1 + on2 == long.len()
    });
    // w1 dies with its jobs running.
    drop(w1.take());
    // 87 that complete and 5 that fail (time out on their worker).
    assert_eq!(submit_each(control, "echo", 87), Some(0));
    for _ in 0..5 {
        submit_timing_out(control);
    }
    for job in &long {
        let envelope = await_result(control, job, &[]).await;
        assert_eq!(envelope["status"], "completed", "{envelope}");
    }
    watch.until("every job's end", |v| {
        heard.record(v);
        heard.ended() >= 100
    });
    drop(watch);

    // The killed worker's running jobs were heard lost, then ended on w2.
    let lost: Vec<&String> = heard
        .0
        .iter()
        .filter(|(_, (_, k))| k.contains(&"lost".to_owned()))
        .map(|(j, _)| j)
        .collect();
    assert!(!lost.is_empty(), "no lost job heard");
    let lost_count = lost.len();
    for job in lost {
        let (workers, kinds) = &heard.0[job];
        assert!(
            workers.contains("w1") && workers.contains("w2"),
            "{job}: {workers:?}"
        );
        assert_eq!(
            kinds.last().map(String::as_str),
            Some("completed"),
            "{job}: {kinds:?}"
        );
    }

    // `peer status`: the pool that is left, once w2's last stats are in.
    let mut status = json!(null);
    jobmesh_testkit::eventually("peer status counts w2's 100 jobs", || {
        let out = run_peer(&["status", "--json", "--control", control]);
        expect_exit(&out, 0);
        status = stdout_json(&out);
        status["completed"] == 95
    })
    .await;
    assert_eq!(status["workers"], 1, "{status}");
    assert_eq!(status["failed"], 5, "{status}");
    let slowest: Vec<&str> = status["slowest"]
        .as_array()
        .expect("slowest")
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert!(slowest.iter().all(|n| *n == "w2"), "{status}");

    // The dashboard shows the same, the lost jobs and w1's leaving.
    let shown = browser.shown();
    assert_eq!(
        shown["ok"], true,
        "the dashboard never showed it: {shown:#}"
    );
    assert_eq!(
        shown["figures"]["lost"],
        lost_count.to_string(),
        "{shown:#}"
    );
    let events: Vec<&str> = shown["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("lost ") && e.contains("w1")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("left ") && e.contains("w1")),
        "{events:?}"
    );
    assert_eq!(shown["workers"], json!(["w2"]), "{shown:#}");
    // Each timed-out job ended on w2 as failed (its own timer fired) or
    // cancelled (the submitter's cancel came first): 5 in all.
    let cancelled: usize = shown["figures"]["cancelled"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .expect("a cancelled count");
    let failures = shown["failures"].as_array().expect("failures");
    assert_eq!(cancelled + failures.len(), 5, "{shown:#}");
    assert!(
        failures.iter().all(|f| f
            .as_str()
            .is_some_and(|f| f.contains("sleep on w2: timed out"))),
        "{shown:#}"
    );

    // The submitter's metrics: 95 completed, 5 timed out.
    let (_, text) = http_get(&http, "/metrics", None);
    let completed = metric(&text, r#"jobmesh_jobs_completed_total{capability="echo"}"#)
        + metric(&text, r#"jobmesh_jobs_completed_total{capability="sleep"}"#);
    assert_eq!(completed, 95.0);
    assert_eq!(
        metric(&text, r#"jobmesh_jobs_timed_out_total{capability="sleep"}"#),
        5.0
    );
    assert!(metric(&text, r#"jobmesh_job_retries_total{capability="sleep"}"#) >= 1.0);
}
