//! `exec` handlers over real WebRTC: JSON in and out, progress lines, exit
//! codes, and timeout/cancel stopping the command's whole process group.

use std::time::Duration;

use jobmesh_core::{EventKind, JobError, JobOptions};
use jobmesh_peer::{DaemonConfig, PeerHandle};
use jobmesh_testkit::{
    cap, init_tracing, loopback_rtc, start_exec_worker, within, PeerGuard, SignalGuard,
};
use serde_json::json;

const CONFIG: &str = r#"
[[handler]]
name = "json-cat"
argv = ["cat"]

[[handler]]
name = "shout"
argv = ["sh", "-c", "echo 'PROGRESS 50 half way there' >&2; echo hello; echo 'PROGRESS 100 done' >&2"]
stdin = "none"
stdout = "text"

[[handler]]
name = "fail"
argv = ["sh", "-c", "echo first >&2; echo boom >&2; exit 3"]
stdin = "none"

[[handler]]
name = "flaky"
argv = ["sh", "-c", "exit 75"]
stdin = "none"
"#;

fn worker(url: &str, pool: &str, dir: &std::path::Path, extra: &str) -> PeerHandle {
    let path = dir.join("handlers.toml");
    std::fs::write(&path, format!("{CONFIG}{extra}")).expect("write config");
    let mut config = DaemonConfig::new(url, "exec-worker", pool);
    config.handover_dir = None;
    config.membership = jobmesh_peer::Membership::Open;
    config.rtc = loopback_rtc();
    config.slots = 2;
    config.grace = Duration::from_secs(2);
    start_exec_worker(config, &path)
}

/// Whether any live process (zombies do not count: they are dead, only not
/// yet reaped by whoever inherited them) belongs to process group `pgid`.
fn group_alive(pgid: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_handlers_run_commands_and_clean_up_after_them() {
    init_tracing();
    let dir = std::env::temp_dir().join(format!("jobmesh-exec-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pidfile = dir.join("pgid");
    // A command that records its process group and leaves background children.
    let detached = dir.join("detached");
    let sleeper = format!(
        "\n[[handler]]\nname = \"linger\"\nargv = [\"sh\", \"-c\", \"echo $$ > {}; sleep 60 & sleep 60 & wait\"]\nstdin = \"none\"\n\
         \n[[handler]]\nname = \"detach\"\nargv = [\"sh\", \"-c\", \"setsid sh -c 'echo $$ > {}; exec sleep 60' & until [ -s {} ]; do sleep 0.01; done; echo 1\"]\nstdin = \"none\"\n",
        pidfile.display(),
        detached.display(),
        detached.display()
    );
    let mut server = SignalGuard::start().await;
    let w = worker(server.url(), "ex", &dir, &sleeper);
    let sub = PeerGuard::start(server.url(), "ex", "sub", &[], 0);
    sub.wait_capable("linger", 1).await;
    let run = |c: &str, input, o: JobOptions| {
        let h = sub.handle.clone();
        let c = cap(c);
        async move {
            within("an exec job", h.run(c, input, o))
                .await
                .expect("answer")
        }
    };
    let quick = || JobOptions::from(Duration::from_secs(15));

    // JSON in, JSON out.
    let r = run("json-cat", json!({"a": [1, 2]}), quick()).await;
    assert_eq!(r.result, Ok(json!({"a": [1, 2]})));

    // Text out, progress lines become events in order.
    let mut job = sub
        .handle
        .submit(cap("shout"), json!(null), quick())
        .await
        .expect("submit");
    let mut percents = Vec::new();
    while let Some(e) = within("an event", job.next_event()).await {
        if let EventKind::Progress { progress, .. } = e.kind {
            percents.push((progress.percent, progress.stage));
        }
    }
    assert_eq!(
        percents,
        vec![
            (Some(50), Some("half".to_owned())),
            (Some(100), Some("done".to_owned()))
        ]
    );
    assert_eq!(
        job.result().await.expect("answer").result,
        Ok(json!({"stdout": "hello\n"}))
    );

    // A non-zero exit fails the job with the code and the stderr tail.
    let r = run("fail", json!(null), quick()).await;
    let Err(JobError::Failed { message, .. }) = r.result else {
        panic!("{:?}", r.result)
    };
    assert!(
        message.contains("exit code 3") && message.contains("boom") && message.contains("first"),
        "{message}"
    );
    assert_eq!(r.attempts.len(), 1, "not retryable");
    // Exit 75 (EX_TEMPFAIL) is retried.
    let r = run(
        "flaky",
        json!(null),
        JobOptions {
            max_retries: 1,
            ..quick()
        },
    )
    .await;
    assert!(matches!(r.result, Err(JobError::Failed { .. })));
    assert_eq!(r.attempts.len(), 2, "retried once");

    // Timeout and cancel stop the whole process group, background children included.
    let mut failed = w.pool().me.stats.failed;
    for how in ["timeout", "cancel"] {
        let _ = std::fs::remove_file(&pidfile);
        let o = JobOptions {
            timeout: Duration::from_millis(if how == "timeout" { 500 } else { 30_000 }),
            max_retries: 0,
            ..JobOptions::default()
        };
        let mut job = sub
            .handle
            .submit(cap("linger"), json!(null), o)
            .await
            .expect("submit");
        loop {
            let e = within("the start", job.next_event()).await.expect("live");
            if matches!(e.kind, EventKind::Started { .. }) {
                break;
            }
        }
        // The group exists once the command wrote its id.
        let pgid = within("the pid file", async {
            loop {
                if let Ok(s) = std::fs::read_to_string(&pidfile) {
                    if s.ends_with('\n') {
                        return s.trim().to_owned();
                    }
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(group_alive(&pgid), "{how}: the command runs");
        if how == "cancel" {
            assert!(job.cancel().await);
        }
        let r = within("the end", job.result()).await.expect("answer");
        let want_timeout = how == "timeout";
        assert_eq!(
            matches!(r.result, Err(JobError::TimedOut { .. })),
            want_timeout,
            "{how}: {:?}",
            r.result
        );
        assert_eq!(
            matches!(r.result, Err(JobError::Cancelled)),
            !want_timeout,
            "{how}: {:?}",
            r.result
        );
        // The worker counts the job failed only after its handler stopped the group.
        let failed_before = failed;
        let idle = w
            .wait_pool(jobmesh_testkit::DEADLINE, |s| {
                s.me.stats.failed > failed_before && s.me.stats.running == 0
            })
            .await
            .expect("the worker finishes the job");
        failed = idle.me.stats.failed;
        // SIGKILL is delivered asynchronously and nothing signals a
        // grandchild's death to us, so watch /proc for it, with a deadline.
        let gone = tokio::time::timeout(jobmesh_testkit::DEADLINE, async {
            while group_alive(&pgid) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(gone.is_ok(), "{how}: the process group is gone");
    }

    // A command that exits while a process it started in a session of its
    // own keeps its stdout open: the job ends, saying so, and frees its slot.
    let r = run("detach", json!(null), quick()).await;
    let Err(JobError::Failed { message, .. }) = r.result else {
        panic!("{:?}", r.result)
    };
    assert!(message.contains("still holds its stdout"), "{message}");
    w.wait_pool(jobmesh_testkit::DEADLINE, |s| s.me.stats.running == 0)
        .await
        .expect("the slot is free");
    if let Ok(pid) = std::fs::read_to_string(&detached) {
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }

    w.shutdown();
    within("the worker to stop", w.stopped()).await;
    let _ = std::fs::remove_dir_all(&dir);
    server.stop().await;
}
