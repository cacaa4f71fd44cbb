//! Issue-4 acceptance with the real binaries: round-robin alternation,
//! timeout exit code, a SIGKILLed worker's job finishing elsewhere, `peer
//! watch`, `peer jobs` and `peer cancel`.

use jobmesh_testkit::process::{
    expect_exit, peer, run_peer, signal_server, stdout_json, Proc, Watch,
};
use jobmesh_testkit::{init_tracing, PeerGuard};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::Stdio;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_the_whole_job_lifecycle() {
    init_tracing();
    let tmp = std::env::temp_dir().join(format!("jobmesh-life-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let sock = |n: &str| tmp.join(format!("{n}.sock")).to_string_lossy().into_owned();
    let data = |n: &str| tmp.join(format!("{n}.data")).to_string_lossy().into_owned();
    let (_server, url) = signal_server();
    // Two one-slot workers; the ready line names each one's peer id.
    let mut workers: HashMap<String, (Proc, String)> = HashMap::new();
    for name in ["w1", "w2"] {
        let (p, line) = Proc::spawn(&mut peer(&[
            "--signal",
            &url,
            "--open",
            "--capabilities",
            "echo,sleep",
            "--slots",
            "1",
            "--name",
            name,
            "--pool",
            "acc",
            "--control",
            &sock(name),
            "--data-dir",
            &data(name),
            "--grace-secs",
            "1",
        ]));
        let id = line
            .split_whitespace()
            .nth(2)
            .expect("peer id in the ready line")
            .to_owned();
        workers.insert(name.to_owned(), (p, id));
    }
    let (_s, _) = Proc::spawn(&mut peer(&[
        "--signal",
        &url,
        "--open",
        "--capabilities",
        "",
        "--name",
        "s",
        "--pool",
        "acc",
        "--control",
        &sock("s"),
        "--data-dir",
        &data("s"),
    ]));
    let watcher = PeerGuard::start(&url, "acc", "watcher", &[], 0);
    watcher.wait_capable("echo", 2).await;
    let s = sock("s");
    let watch = Watch::start(&s, &[]);

    // Ids of every job whose envelope we have seen: the watch stream also
    // carries their events, and a new job is the one not among them.
    let mut known: Vec<Value> = Vec::new();
    // 10 round-robin submits from one daemon alternate workers.
    let mut names = Vec::new();
    for i in 0..10 {
        let input = json!({ "i": i }).to_string();
        let out = run_peer(&[
            "submit",
            "echo",
            "--input",
            &input,
            "--strategy",
            "round-robin",
            "--json",
            "--control",
            &s,
        ]);
        expect_exit(&out, 0);
        let env = stdout_json(&out);
        assert_eq!(env["attempts"], 1);
        known.push(env["job_id"].clone());
        names.push(env["worker"]["name"].as_str().expect("name").to_owned());
    }
    assert!(
        names.windows(2).all(|p| p[0] != p[1]),
        "alternates: {names:?}"
    );

    // The watch stream shows a job's lifecycle with timestamps.
    let first = watch.until("a queued event", |v| v["event"] == "queued");
    let job = first["job_id"].clone();
    let mut seen = vec!["queued".to_owned()];
    let mut last_at = first["at_ms"].as_u64().expect("timestamp");
    while seen.last().map(String::as_str) != Some("finished") {
        let v = watch.until("the job's next event", |v| v["job_id"] == job);
        let at = v["at_ms"].as_u64().expect("timestamp");
        assert!(at >= last_at, "timestamps never go back");
        last_at = at;
        seen.push(v["event"].as_str().expect("event").to_owned());
    }
    assert_eq!(seen, vec!["queued", "dispatched", "started", "finished"]);

    // A job longer than its timeout: exit 3, status timed_out, one attempt.
    let out = run_peer(&[
        "submit",
        "sleep",
        "--input",
        r#"{"ms":5000}"#,
        "--timeout",
        "1",
        "--retries",
        "0",
        "--json",
        "--control",
        &s,
    ]);
    expect_exit(&out, 3);
    let env = stdout_json(&out);
    assert_eq!(env["status"], "timed_out");
    assert_eq!(env["attempts"], 1);
    known.push(env["job_id"].clone());
    // And the worker takes the next job.
    let out = run_peer(&[
        "submit",
        "sleep",
        "--input",
        r#"{"ms":10}"#,
        "--json",
        "--control",
        &s,
    ]);
    expect_exit(&out, 0);
    known.push(stdout_json(&out)["job_id"].clone());

    // A 3 s job whose worker is SIGKILLed once it started completes on the other.
    let long = peer(&[
        "submit",
        "sleep",
        "--input",
        r#"{"ms":3000}"#,
        "--json",
        "--control",
        &s,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn submit");
    let queued = watch.until("the long job", |v| {
        v["event"] == "queued" && !known.contains(&v["job_id"])
    });
    let long_id = queued["job_id"].clone();
    let started = watch.until("the long job to start", |v| {
        v["event"] == "started" && v["job_id"] == long_id
    });
    let victim_id = started["worker"].as_str().expect("worker").to_owned();
    let victim = workers
        .iter()
        .find(|(_, (_, id))| *id == victim_id)
        .map(|(n, _)| n.clone())
        .expect("one of ours");
    let (proc, _) = workers.remove(&victim).expect("victim");
    proc.kill();
    let out = long.wait_with_output().expect("submit finishes");
    expect_exit(&out, 0);
    let env = stdout_json(&out);
    assert_eq!(env["result"], json!({"slept_ms": 3000}));
    assert_eq!(env["attempts"], 2, "{env}");
    assert_ne!(env["worker"]["name"], victim.as_str());
    known.push(env["job_id"].clone());

    // `peer cancel` ends a running job; `peer jobs` lists it.
    let pending = peer(&[
        "submit",
        "sleep",
        "--input",
        r#"{"ms":60000}"#,
        "--json",
        "--control",
        &s,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn submit");
    let queued = watch.until("the job", |v| {
        v["event"] == "queued" && !known.contains(&v["job_id"])
    });
    let id = queued["job_id"].as_str().expect("id").to_owned();
    watch.until("the job to start", |v| {
        v["event"] == "started" && v["job_id"] == id.as_str()
    });
    let out = run_peer(&["cancel", &id, "--control", &s]);
    expect_exit(&out, 0);
    let out = pending.wait_with_output().expect("submit finishes");
    expect_exit(&out, 1);
    assert_eq!(stdout_json(&out)["status"], "cancelled");
    let out = run_peer(&["jobs", "--json", "--control", &s]);
    let jobs = stdout_json(&out);
    let listed = jobs
        .as_array()
        .expect("list")
        .iter()
        .find(|j| j["job_id"] == id.as_str())
        .expect("the cancelled job is listed");
    assert_eq!(listed["state"], "cancelled");
    assert_eq!(
        run_peer(&["cancel", &id, "--control", &s]).status.code(),
        Some(1),
        "already over"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
