//! The submitting daemon is killed (SIGKILL) while its worker runs two of
//! its jobs. The worker keeps running them: one finishes while the submitter
//! is away, and its result (a blob) is kept; the other is still running when
//! the submitter is back. The restarted submitter resumes both from its
//! journal and re-attaches to the worker, which delivers the kept result and
//! carries on with the running job: each job ran exactly once.

use jobmesh_testkit::process::{await_result, daemon, expect_exit, run_peer, signal_server};
use jobmesh_testkit::{eventually, init_tracing, PeerGuard};

/// An exec handler `name` that logs `<job id> start` and `<job id> end`
/// around a `sleep` and returns its input blob as its output blob.
fn handler(name: &str, sleep: &str, log: &std::path::Path) -> String {
    format!(
        "[[handler]]\nname = \"{name}\"\nargv = [\"sh\", \"-c\", \"echo \\\"$JOBMESH_JOB_ID start\\\" >> {log}; sleep {sleep}; echo \\\"$JOBMESH_JOB_ID end\\\" >> {log}; cat\"]\nstdin = \"blob\"\nstdout = \"blob\"\nenv = [\"PATH\"]\n",
        log = log.display()
    )
}

fn lines(log: &std::path::Path, job_id: &str, what: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == format!("{job_id} {what}"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_its_result_for_a_submitter_that_comes_back() {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("executions.log");
    let config = dir.path().join("handlers.toml");
    let toml = handler("quick", "0.5", &log) + &handler("slow", "6", &log);
    std::fs::write(&config, toml).expect("handler config");
    let config = config.to_str().expect("utf-8");
    let input = dir.path().join("input.bin");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&input, &bytes).expect("input");
    let input = input.to_str().expect("utf-8");

    let (_server, url) = signal_server();
    let extra = ["--config", config, "--slots", "2"];
    let _worker = daemon(&url, "keep", "w", "quick,slow", dir.path(), &extra);
    let submitter = daemon(&url, "keep", "s", "", dir.path(), &[]);
    let watcher = PeerGuard::start(&url, "keep", "watcher", &[], 0);
    watcher.wait_capable("slow", 1).await;
    let sock = dir.path().join("s.sock");
    let sock = sock.to_str().expect("utf-8");

    let submit = |cap: &str| {
        let out = run_peer(&[
            "submit",
            cap,
            "--file",
            input,
            "--detach",
            "--control",
            sock,
        ]);
        expect_exit(&out, 0);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let quick = submit("quick");
    let slow = submit("slow");
    eventually("both jobs to start on the worker", || {
        lines(&log, &quick, "start") == 1 && lines(&log, &slow, "start") == 1
    })
    .await;

    submitter.kill();
    eventually(
        "the quick job to finish while its submitter is away",
        || lines(&log, &quick, "end") == 1,
    )
    .await;
    let _submitter = daemon(&url, "keep", "s", "", dir.path(), &[]);

    for (job_id, name) in [(&quick, "quick"), (&slow, "slow")] {
        let out_path = dir.path().join(format!("{name}.out"));
        let out_arg = out_path.to_str().expect("utf-8");
        let envelope = await_result(sock, job_id, &["--out", out_arg]).await;
        assert_eq!(envelope["status"], "completed", "{name}: {envelope}");
        assert_eq!(
            std::fs::read(&out_path).expect("the result blob"),
            bytes,
            "{name}: the result blob is the input"
        );
        assert_eq!(
            lines(&log, job_id, "start"),
            1,
            "{name}: ran once, its result kept or its run re-attached: {envelope}"
        );
    }
}
