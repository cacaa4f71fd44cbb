//! Issue 18's acceptance, as one run: two workers and an observer; 100 jobs,
//! a few failing and one worker killed while it runs some. `peer watch
//! --all` hears every job end, the killed worker's running jobs as lost,
//! and the submitter's metrics count what its jobs did.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use jobmesh_testkit::process::{
    await_result, daemon, expect_exit, peer, run_peer, signal_server, submit_each,
    submit_timing_out, wait_capable, Proc,
};

/// Per job id: the workers it was heard on, and its events in order.
type Heard = HashMap<String, (HashSet<String>, Vec<String>)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_an_observer_and_a_killed_worker_all_agree() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w1 = Some(daemon(
        &url,
        "accept",
        "w1",
        "echo,sleep",
        dir.path(),
        &["--slots", "4"],
    ));
    let _w2 = daemon(
        &url,
        "accept",
        "w2",
        "echo,sleep",
        dir.path(),
        &["--slots", "4"],
    );
    let _o = daemon(&url, "accept", "o", "", dir.path(), &[]);
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    let (_s, ready) = Proc::spawn(&mut peer(&[
        "--signal",
        &url,
        "--pool",
        "accept",
        "--name",
        "s",
        "--open",
        "--no-self-dispatch",
        "--control",
        sock("s").to_str().expect("utf-8"),
        "--data-dir",
        dir.path().join("s.data").to_str().expect("utf-8"),
        "--metrics",
        "127.0.0.1:0",
    ]));
    let metrics = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://")?.strip_suffix("/metrics"))
        .expect("a metrics address")
        .to_owned();
    wait_capable(&sock("s"), "sleep", 2).await;
    wait_capable(&sock("o"), "sleep", 2).await;
    let control = sock("s");
    let control = control.to_str().expect("utf-8");

    let mut watch = peer(&[
        "watch",
        "--all",
        "--json",
        "--control",
        sock("o").to_str().expect("utf-8"),
    ])
    .stdout(std::process::Stdio::piped())
    .spawn()
    .expect("peer watch runs");
    let stdout = watch.stdout.take().expect("piped");
    let (tx, lines) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    let mut heard = Heard::new();
    let mut listen = |until: &dyn Fn(&Heard) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !until(&heard) {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("the stream stalled ({e}): {} jobs heard", heard.len()));
            if let (Some(job), Some(event), Some(worker)) = (
                v["job_id"].as_str(),
                v["event"].as_str(),
                v["worker_name"].as_str(),
            ) {
                let j = heard.entry(job.to_owned()).or_default();
                j.0.insert(worker.to_owned());
                j.1.push(event.to_owned());
            }
        }
    };

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
                h.get(*j)
                    .is_some_and(|(ws, k)| ws.contains(w) && k.contains(&"started".to_owned()))
            })
            .count()
    };
    listen(&|h| started_on(h, "w1") >= 1 && started_on(h, "w2") >= 1);
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
    let ended = |kinds: &Vec<String>| {
        kinds
            .iter()
            .any(|k| matches!(k.as_str(), "completed" | "failed" | "cancelled"))
    };
    listen(&|h| h.values().filter(|(_, k)| ended(k)).count() >= 100);
    let _ = watch.kill();
    let _ = watch.wait();

    // The killed worker's running jobs were heard lost, then ended on w2.
    let lost: Vec<&String> = heard
        .iter()
        .filter(|(_, (_, k))| k.contains(&"lost".to_owned()))
        .map(|(j, _)| j)
        .collect();
    assert!(!lost.is_empty(), "no lost job heard");
    for job in lost {
        let (workers, kinds) = &heard[job];
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

    // The submitter's metrics: 95 completed, 5 timed out.
    let text = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&metrics).expect("connect");
        write!(c, "GET /metrics HTTP/1.0\r\n\r\n").expect("send");
        let mut t = String::new();
        c.read_to_string(&mut t).expect("read");
        t
    };
    let sample = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    let completed = sample(r#"jobmesh_jobs_completed_total{capability="echo"}"#)
        + sample(r#"jobmesh_jobs_completed_total{capability="sleep"}"#);
    assert_eq!(completed, 95.0);
    assert_eq!(
        sample(r#"jobmesh_jobs_timed_out_total{capability="sleep"}"#),
        5.0
    );
    assert!(sample(r#"jobmesh_job_retries_total{capability="sleep"}"#) >= 1.0);
}
