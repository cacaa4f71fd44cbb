//! A pool-wide observer over real WebRTC: `peer watch --all` on a daemon
//! that runs no job hears every job of both workers — started, then
//! completed or failed with its error — streamed by the workers themselves.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

use jobmesh_testkit::process::{
    daemon, peer, signal_server, submit_each, submit_timing_out, wait_capable,
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

    let mut watch = peer(&[
        "watch",
        "--all",
        "--json",
        "--control",
        sock("o").to_str().expect("utf-8"),
    ])
    .stdout(Stdio::piped())
    .spawn()
    .expect("peer watch runs");
    let stdout = watch.stdout.take().expect("piped");
    let (tx, lines) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let Ok(v) = serde_json::from_str(&line) else {
                continue;
            };
            if tx.send(v).is_err() {
                break;
            }
        }
    });

    let control = sock("s");
    let control = control.to_str().expect("utf-8");
    assert_eq!(submit_each(control, "echo", 20), Some(0));
    // One that fails on its worker: the handler is stopped at its timeout.
    submit_timing_out(control);

    // Every job's start and end, from the worker that ran it (the history
    // covers what ran before the observer had subscribed).
    let mut jobs: HashMap<String, (HashSet<String>, Vec<String>)> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ended = |jobs: &HashMap<String, (HashSet<String>, Vec<String>)>| {
        jobs.values()
            .filter(|(_, k)| {
                k.iter()
                    .any(|e| matches!(e.as_str(), "completed" | "failed" | "cancelled"))
            })
            .count()
    };
    while ended(&jobs) < 21 {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = lines.recv_timeout(left).unwrap_or_else(|e| {
            panic!(
                "only {} jobs ended in the stream ({e}): {jobs:?}",
                ended(&jobs)
            )
        });
        let (Some(job), Some(event), Some(worker)) = (
            v["job_id"].as_str(),
            v["event"].as_str(),
            v["worker_name"].as_str(),
        ) else {
            continue;
        };
        let j = jobs.entry(job.to_owned()).or_default();
        j.0.insert(worker.to_owned());
        j.1.push(event.to_owned());
        if event == "failed" || event == "cancelled" {
            assert_eq!(v["capability"], "sleep", "{v}");
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
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
