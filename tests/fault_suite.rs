//! The fault suite (docs/reliability.md): real processes, real kills, and a
//! history of every submit, delivery and execution checked for lost and
//! duplicated jobs. Each scenario prints its summary line; run them all with
//!
//! ```sh
//! cargo test --test tests fault_suite -- --nocapture --test-threads=1
//! ```
//!
//! Executions are counted by the handler itself: an exec handler appends the
//! job id to a log file each time it starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use jobmesh_peer::control::{ControlError, Request, Session};
use jobmesh_testkit::faults::{
    await_outcomes, detached, logging_handler, print, read_executions, Delivered, History,
};
use jobmesh_testkit::process::{daemon, signal_server, Proc};
use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, DEADLINE};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

/// `record`: logs each start, takes 0.2 s, returns its input.
fn record_handler(dir: &Path) -> (PathBuf, PathBuf) {
    logging_handler(dir, "record", "0.2", "json")
}

/// Scenario 3: the submitting daemon is killed with SIGKILL at random points
/// (seeded) while 200 detached jobs are submitted and run, and restarted on
/// the same data dir each time. Every job whose id was returned must end
/// completed (or failed with its error), and `result` must return it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite_submitter_killed_while_200_jobs_run() {
    init_tracing();
    const JOBS: usize = 200;
    let seed = 3;
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, log) = record_handler(dir.path());
    let config = config.to_str().expect("utf-8").to_owned();
    let (_server, url) = signal_server();
    let _workers: Vec<Proc> = ["w1", "w2"]
        .iter()
        .map(|w| {
            let extra = ["--config", config.as_str(), "--slots", "8"];
            daemon(&url, "f3", w, "record", dir.path(), &extra)
        })
        .collect();
    let watcher = PeerGuard::start(&url, "f3", "watcher", &[], 0);
    watcher.wait_capable("record", 2).await;
    let sock = dir.path().join("s.sock");
    let start = || daemon(&url, "f3", "s", "", dir.path(), &[]);
    let mut submitter = start();

    let mut history = History::default();
    // Kill points: twice while submitting, once after.
    let mut kills = [rng.random_range(20..90), rng.random_range(110..180)].to_vec();
    let mut next = 0;
    while next < JOBS {
        let session = Session::open(&sock).await.expect("a session");
        let until = kills.first().copied().unwrap_or(JOBS).min(JOBS);
        let batch: Vec<Request> = (next..until)
            .map(|i| detached("record", json!({ "n": i })))
            .collect();
        // All of the batch in flight at once, then the kill lands among them.
        let answers = futures_util::future::join_all(batch.iter().map(|r| session.request(r)));
        let answers = if kills.is_empty() {
            answers.await
        } else {
            kills.remove(0);
            let pause = Duration::from_millis(rng.random_range(0..30));
            let (answers, ()) = tokio::join!(answers, async {
                tokio::time::sleep(pause).await;
                submitter.kill_now();
            });
            answers
        };
        for a in answers {
            match a {
                Ok(v) if v["status"] == "submitted" => {
                    history.submitted(
                        v["job_id"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .expect("an id"),
                    );
                }
                Ok(v) => {
                    eprintln!("submit refused: {v}");
                    history.refused(v.to_string())
                }
                Err(_) => history.unknown(),
            }
        }
        next = until;
        if !submitter.is_running() {
            submitter = start();
        }
    }
    // One more kill while the jobs run.
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
    submitter.kill_now();
    let _submitter = start();

    // Every acknowledged job's outcome, from the journal.
    await_outcomes(&sock, &mut history, DEADLINE).await;
    read_executions(&log, &mut history);
    let summary = history.check("submitter kill -9 x3, 200 detached jobs");
    print(&summary);
    assert_eq!((summary.lost, summary.duplicated), (0, 0), "{summary}");
    assert_eq!(
        summary.completed + summary.failed,
        summary.submitted - summary.unknown
    );
    assert!(summary.completed > 0, "{summary}");
}

/// A worker process `name` of generation `generation` (each restart gets a
/// fresh data dir, so a fresh peer id).
fn relay_worker(url: &str, dir: &Path, config: &Path, name: &str, generation: u32) -> Proc {
    let sock = dir.join(format!("{name}.sock"));
    let data = dir.join(format!("{name}-{generation}.data"));
    let mut cmd = jobmesh_testkit::process::peer(&[
        "--signal",
        url,
        "--open",
        "--pool",
        "f1",
        "--name",
        name,
        "--capabilities",
        "relay",
        "--slots",
        "2",
        "--config",
        config.to_str().expect("utf-8"),
        "--control",
        sock.to_str().expect("utf-8"),
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--grace-secs",
        "1",
    ]);
    Proc::spawn(&mut cmd).0
}

/// Scenario 1: workers killed with SIGKILL at random moments (seeded), so
/// jobs lose them while their input uploads, while they run and while their
/// result comes back; each killed worker is restarted at once. Every job
/// must be delivered exactly once, with its blob intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite_workers_killed_during_upload_run_and_delivery() {
    init_tracing();
    const JOBS: usize = 60;
    let seed = 1;
    let dir = tempfile::tempdir().expect("temp dir");
    // `relay`: logs each start, takes 0.1 s, sends its input blob back.
    let (config, log) = logging_handler(dir.path(), "relay", "0.1", "blob");
    let input = dir.path().join("input.bin");
    let payload: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&input, &payload).expect("input");
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).expect("out dir");
    let (_server, url) = signal_server();
    let names = ["w1", "w2", "w3"];
    let mut workers: Vec<Proc> = names
        .iter()
        .map(|n| relay_worker(&url, dir.path(), &config, n, 0))
        .collect();
    let _submitter = daemon(&url, "f1", "s", "", dir.path(), &[]);
    let watcher = PeerGuard::start(&url, "f1", "watcher", &[], 0);
    watcher.wait_capable("relay", 3).await;
    let sock = dir.path().join("s.sock");

    let session = Session::open(&sock).await.expect("a session");
    let requests: Vec<Request> = (0..JOBS)
        .map(|i| {
            let mut r = Request::submit(cap("relay"), json!({}));
            if let Request::Submit {
                files,
                out,
                options,
                ..
            } = &mut r
            {
                files.push(input.clone());
                *out = Some(out_dir.join(format!("{i}.bin")));
                options.retries = Some(20);
                options.timeout_ms = Some(20_000);
            }
            r
        })
        .collect();
    let stop = tokio_util::sync::CancellationToken::new();
    let killer = {
        let stop = stop.clone();
        let (url, dir, config) = (url.clone(), dir.path().to_owned(), config.clone());
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut generation = 0;
            let mut kills = 0;
            loop {
                let pause = Duration::from_millis(rng.random_range(150..500));
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
                let i = rng.random_range(0..workers.len());
                workers[i].kill_now();
                kills += 1;
                generation += 1;
                workers[i] = relay_worker(&url, &dir, &config, names[i], generation);
            }
            (workers, kills)
        })
    };
    let answers = within(
        "every job's answer",
        futures_util::future::join_all(requests.iter().map(|r| session.request(r))),
    )
    .await;
    stop.cancel();
    let (_workers, kills) = killer.await.expect("the killer");

    let mut history = History::default();
    for (i, a) in answers.into_iter().enumerate() {
        match a {
            Ok(v) if v["job_id"].is_string() => {
                let id: Uuid = v["job_id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("an id");
                history.submitted(id);
                if v["status"] == "completed" {
                    let back =
                        std::fs::read(out_dir.join(format!("{i}.bin"))).expect("the result blob");
                    assert!(back == payload, "job {i}: the blob came back changed");
                    history.delivered(id, Delivered::Completed);
                } else {
                    eprintln!("job failed: {v}");
                    history.delivered(id, Delivered::Failed(v.to_string()));
                }
            }
            Ok(v) => {
                eprintln!("submit refused: {v}");
                history.refused(v.to_string());
            }
            Err(_) => history.unknown(),
        }
    }
    read_executions(&log, &mut history);
    let summary = history.check(&format!("worker kill -9 x{kills}, {JOBS} x 256 KiB jobs"));
    print(&summary);
    assert_eq!((summary.lost, summary.duplicated), (0, 0), "{summary}");
    assert_eq!(summary.completed, JOBS, "{summary}");
    assert!(kills > 0);
}

/// Scenario 6 (the submitter half): SIGTERM on a submitting daemon with
/// queued and running jobs. It stops without waiting for them; they stay
/// unfinished in its journal and run after it is started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite_submitter_stopped_with_sigterm_resumes_its_queue() {
    init_tracing();
    const JOBS: usize = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, log) = record_handler(dir.path());
    let config = config.to_str().expect("utf-8").to_owned();
    let (_server, url) = signal_server();
    let extra = ["--config", config.as_str(), "--slots", "1"];
    let _worker = daemon(&url, "f6", "w", "record", dir.path(), &extra);
    let watcher = PeerGuard::start(&url, "f6", "watcher", &[], 0);
    watcher.wait_capable("record", 1).await;
    let sock = dir.path().join("s.sock");
    let mut submitter = daemon(&url, "f6", "s", "", dir.path(), &["--grace-secs", "1"]);

    let mut history = History::default();
    let session = Session::open(&sock).await.expect("a session");
    let requests: Vec<Request> = (0..JOBS)
        .map(|i| detached("record", json!({ "n": i })))
        .collect();
    for a in futures_util::future::join_all(requests.iter().map(|r| session.request(r))).await {
        let v = a.expect("every submit answered before the stop");
        history.submitted(
            v["job_id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("an id"),
        );
    }
    drop(session);
    // One slot, 0.2 s a job: most of them are still queued now.
    submitter.signal("TERM");
    let stopped = within("the submitter to exit on SIGTERM", async {
        loop {
            if !submitter.is_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    stopped.await;
    let _submitter = daemon(&url, "f6", "s", "", dir.path(), &[]);

    await_outcomes(&sock, &mut history, DEADLINE).await;
    read_executions(&log, &mut history);
    let summary = history.check("submitter SIGTERM with 20 jobs queued");
    print(&summary);
    assert_eq!((summary.lost, summary.duplicated), (0, 0), "{summary}");
    assert_eq!(summary.completed, JOBS, "{summary}");
}

/// Peak resident memory of a process, from `/proc`.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Scenario 7: 100,000 submits at once against one slow worker, through a
/// submitting daemon holding at most 200 jobs. Past the limit a submit gets
/// a clear `queue_full` at once; every job it took is run and delivered; the
/// daemon's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite_a_flood_of_submits_meets_the_queue_limit() {
    init_tracing();
    const SUBMITS: usize = 100_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, url) = signal_server();
    let _worker = daemon(&url, "f7", "w", "sleep", dir.path(), &["--slots", "2"]);
    let watcher = PeerGuard::start(&url, "f7", "watcher", &[], 0);
    watcher.wait_capable("sleep", 1).await;
    let sock = dir.path().join("s.sock");
    let submitter = daemon(&url, "f7", "s", "", dir.path(), &["--queue-limit", "200"]);

    let session = Session::open(&sock).await.expect("a session");
    let mut history = History::default();
    let mut queue_full = 0;
    let mut refused_ids = Vec::new();
    let mut answers = futures_util::stream::iter(0..SUBMITS)
        .map(|_| {
            let req = Request::submit(cap("sleep"), json!({ "ms": 10 }));
            let session = &session;
            async move { session.request(&req).await }
        })
        .buffer_unordered(jobmesh_peer::control::MAX_SESSION_REQUESTS);
    // 100,000 journaled submits take a while in a debug build: a wider
    // deadline than the suite's usual one.
    let flood = async {
        while let Some(a) = answers.next().await {
            let v = a.expect("an answer");
            let id: Option<Uuid> = v["job_id"].as_str().and_then(|s| s.parse().ok());
            match (v["status"].as_str(), id) {
                (Some("queue_full"), id) => {
                    queue_full += 1;
                    refused_ids.extend(id);
                    let error = v["error"].as_str().unwrap_or_default();
                    assert!(error.contains("queue full"), "a clear refusal: {v}");
                    history.refused(error);
                }
                (Some("completed"), Some(id)) => {
                    history.submitted(id);
                    history.delivered(id, Delivered::Completed);
                }
                (_, Some(id)) => {
                    eprintln!("job failed: {v}");
                    history.submitted(id);
                    history.delivered(id, Delivered::Failed(v.to_string()));
                }
                _ => panic!("an answer without a job: {v}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(300), flood)
        .await
        .expect("every submit answered within 300 s");
    let peak = peak_rss_kib(submitter.0.id());
    let summary = history.check("100,000 submits, queue limit 200 (no exec log)");
    print(&summary);
    println!(
        "submitter peak RSS {} MiB, {queue_full} refused queue_full",
        peak / 1024
    );
    assert_eq!((summary.lost, summary.duplicated), (0, 0), "{summary}");
    assert_eq!(summary.completed + summary.failed, SUBMITS, "{summary}");
    assert!(queue_full > 0 && summary.completed > 0, "{summary}");
    // A refused submit is refused before it is journaled: the journal holds
    // what was taken, not the flood.
    let journaled = futures_util::future::join_all(refused_ids.iter().map(|&job_id| {
        let req = Request::Result {
            job_id,
            out: None,
            out_dir: None,
        };
        let session = &session;
        async move { session.request(&req).await }
    }))
    .await
    .into_iter()
    .filter(|a| !matches!(a, Err(ControlError::Daemon(e)) if e.contains("no job")))
    .count();
    println!("{journaled} of {queue_full} refused submits journaled");
    assert_eq!(journaled, 0, "refused submits were journaled");
    // Bounded: a queue of 200 jobs and 16,384 requests in flight, not 100,000.
    assert!(peak < 512 * 1024, "submitter peak RSS {peak} KiB");
}

/// Scenario 4: the signal-server goes away for 30 s (set
/// `JOBMESH_FAULT_OUTAGE_SECS` for a longer run). Jobs running over open
/// links finish; new jobs to a worker already linked keep working
/// throughout; once the server is back on its address, the peers find it
/// again (backoff with jitter, capped at 5 s) and a newcomer can reach the
/// worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite_the_signal_server_down_for_30_s() {
    init_tracing();
    let outage = std::env::var("JOBMESH_FAULT_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_secs);
    let mut server = jobmesh_testkit::SignalGuard::start().await;
    let worker = PeerGuard::start(server.url(), "f4", "worker", &["sleep"], 4);
    let sub = PeerGuard::start(server.url(), "f4", "sub", &[], 0);
    sub.wait_capable("sleep", 1).await;
    let run = |ms: u64| {
        let h = sub.handle.clone();
        async move {
            h.submit(cap("sleep"), json!({ "ms": ms }), Duration::from_secs(60))
                .await
                .expect("submitted")
        }
    };
    // The link is open before the outage.
    let warm = run(1).await;
    assert!(warm.result().await.expect("warm-up").result.is_ok());

    let mut history = History::default();
    let mut jobs = Vec::new();
    for _ in 0..4 {
        jobs.push(run(2_000).await);
    }
    server.stop().await;
    sub.wait_pool("the server to go", |s| !s.connected).await;
    // Throughout the outage, new jobs to the linked worker keep completing.
    let until = tokio::time::Instant::now() + outage;
    while tokio::time::Instant::now() < until {
        let job = run(50).await;
        let id = job.id();
        history.submitted(id);
        let report = within("a job during the outage", job.result())
            .await
            .expect("an outcome");
        match report.result {
            Ok(_) => history.delivered(id, Delivered::Completed),
            Err(e) => history.delivered(id, Delivered::Failed(e.to_string())),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for job in jobs {
        let id = job.id();
        history.submitted(id);
        match within("a job that ran through the outage", job.result())
            .await
            .expect("an outcome")
            .result
        {
            Ok(_) => history.delivered(id, Delivered::Completed),
            Err(e) => history.delivered(id, Delivered::Failed(e.to_string())),
        }
    }

    // Back on its address: both peers rejoin, and a newcomer reaches the worker.
    let mut server = jobmesh_testkit::SignalGuard::restart_on(&server).await;
    sub.wait_capable("sleep", 1).await;
    let w = worker.handle.id();
    let fresh = PeerGuard::start(server.url(), "f4", "fresh", &[], 0);
    fresh
        .wait_pool("the worker again", |s| s.peers.iter().any(|p| p.id == w))
        .await;
    let after = within(
        "a newcomer's job after the outage",
        fresh
            .handle
            .run(cap("sleep"), json!({ "ms": 1 }), Duration::from_secs(15)),
    )
    .await
    .expect("an outcome");
    assert!(after.result.is_ok(), "{:?}", after.result);

    let summary = history.check(&format!(
        "signal-server down {} s (no exec log)",
        outage.as_secs()
    ));
    print(&summary);
    assert_eq!(
        (summary.lost, summary.duplicated, summary.failed),
        (0, 0, 0),
        "{summary}"
    );
    server.stop().await;
}

/// Scenario 6, the worker's half: SIGTERM on a worker while it runs jobs.
/// They finish and are delivered; it takes no new job (those go to the
/// other worker); it exits, with success, within its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite_a_worker_stopped_with_sigterm_finishes_its_jobs() {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, url) = signal_server();
    // Each worker logs its own executions: `slow` takes 1.5 s.
    let worker = |name: &str| {
        let own = dir.path().join(name);
        std::fs::create_dir_all(&own).expect("worker dir");
        let (config, log) = logging_handler(&own, "slow", "1.5", "json");
        let config = config.to_str().expect("utf-8").to_owned();
        let extra = [
            "--config",
            config.as_str(),
            "--slots",
            "2",
            "--grace-secs",
            "10",
        ];
        (daemon(&url, "f6", name, "slow", dir.path(), &extra), log)
    };
    let (mut w1, log1) = worker("w1");
    let (_w2, log2) = worker("w2");
    let watcher = PeerGuard::start(&url, "f6", "watcher", &[], 0);
    watcher.wait_capable("slow", 2).await;
    let sock = dir.path().join("s.sock");
    let _submitter = daemon(&url, "f6", "s", "", dir.path(), &[]);
    let session = Session::open(&sock).await.expect("a session");
    let slow = |i: usize| Request::submit(cap("slow"), json!({ "n": i }));
    let count = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .count()
    };

    // Four jobs, two on each worker, all running.
    let first: Vec<Request> = (0..4).map(slow).collect();
    let first = futures_util::future::join_all(first.iter().map(|r| session.request(r)));
    let (first, ()) = tokio::join!(first, async {
        jobmesh_testkit::eventually("all four jobs to run", || {
            count(&log1) == 2 && count(&log2) == 2
        })
        .await;
        w1.signal("TERM");
    });
    // Four more after the SIGTERM: w1 takes none of them.
    let second: Vec<Request> = (4..8).map(slow).collect();
    let second = within(
        "the jobs after the SIGTERM",
        futures_util::future::join_all(second.iter().map(|r| session.request(r))),
    )
    .await;

    let mut history = History::default();
    for answer in first.into_iter().chain(second) {
        let v = answer.expect("an answer");
        let id: Uuid = v["job_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("an id");
        history.submitted(id);
        match v["status"].as_str() {
            Some("completed") => history.delivered(id, Delivered::Completed),
            _ => history.delivered(id, Delivered::Failed(v.to_string())),
        }
    }
    read_executions(&log1, &mut history);
    read_executions(&log2, &mut history);
    let summary = history.check("worker SIGTERM with 2 jobs running");
    print(&summary);
    assert_eq!((summary.lost, summary.duplicated), (0, 0), "{summary}");
    assert_eq!(summary.completed, 8, "every job completed: {summary}");
    assert_eq!(count(&log1), 2, "the draining worker took no new job");
    assert_eq!(count(&log2), 6);
    jobmesh_testkit::eventually("the drained worker to exit", || !w1.is_running()).await;
    let status = w1.0.wait().expect("its exit status");
    assert!(status.success(), "a drained worker exits cleanly: {status}");
}
