//! Blobs over real WebRTC: exec handlers take files in and give files back,
//! a damaged chunk fails the attempt and the retry succeeds, a blob over the
//! worker's limit is refused before any byte is sent, and no spool file
//! outlives its job — after success, failure, cancel and timeout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jobmesh_core::{JobError, JobOptions};
use jobmesh_peer::{Blob, DaemonConfig, PeerHandle};
use jobmesh_testkit::{
    cap, eventually, init_tracing, loopback_rtc, start_exec_worker, within, PeerGuard, SignalGuard,
};
use jobmesh_transport::rtc::Faults;
use serde_json::json;

/// Exec handlers of blobs (`copy` is `cat`, its input blob back).
pub(crate) const CONFIG: &str = r#"
[[handler]]
name = "copy"
argv = ["cat"]
stdin = "blob"
stdout = "blob"

[[handler]]
name = "split"
argv = ["sh", "-c", "cp \"$JOBMESH_INPUT_0\" \"$JOBMESH_OUTPUT_DIR/a.bin\"; cp {input.1} \"$JOBMESH_OUTPUT_DIR/b.txt\"; echo \"{\\\"inputs\\\": $JOBMESH_INPUT_COUNT, \\\"first\\\": \\\"$JOBMESH_INPUT_NAME_0\\\"}\""]
stdin = "none"

[[handler]]
name = "fail-with-blob"
argv = ["sh", "-c", "cat > \"$JOBMESH_WORK_DIR/partial.out\"; echo broken >&2; exit 4"]
stdin = "blob"

[[handler]]
name = "hang"
argv = ["sh", "-c", "sleep 60"]
stdin = "blob"
"#;

/// A worker running the exec handlers above, spooling under `spool`.
fn worker(url: &str, pool: &str, dir: &Path, spool: &Path, faults: Arc<Faults>) -> PeerHandle {
    let path = dir.join("handlers.toml");
    std::fs::write(&path, CONFIG).expect("write config");
    let mut config = DaemonConfig::new(url, "blob-worker", pool);
    config.membership = jobmesh_peer::Membership::Open;
    config.rtc = loopback_rtc();
    config.rtc.faults = faults;
    config.slots = 2;
    config.grace = Duration::from_secs(2);
    config.spool_dir = Some(spool.to_owned());
    // Over the data channel, faults and all, not handed over on this host.
    config.handover_dir = None;
    config.blobs.max_blob_size = 4 * 1024 * 1024;
    start_exec_worker(config, &path)
}

/// Files under `dir`, recursively (the spool root itself does not count).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push(p.clone());
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_handlers_take_and_return_blobs_and_leave_no_files_behind() {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let (wspool, sspool) = (dir.path().join("w"), dir.path().join("s"));
    std::fs::create_dir_all(&wspool).expect("dir");
    std::fs::create_dir_all(&sspool).expect("dir");
    let faults = Arc::new(Faults::default());
    let mut server = SignalGuard::start().await;
    let w = worker(server.url(), "bl", dir.path(), &wspool, faults.clone());
    let sub = PeerGuard::start_configured(server.url(), "bl", "sub", &[], 0, |c| {
        c.spool_dir = Some(sspool.clone());
    });
    sub.wait_capable("copy", 1).await;
    let opts = || JobOptions::from(Duration::from_secs(15));
    let run = |c: &str, blobs: Vec<Blob>, o: JobOptions| {
        let h = sub.handle.clone();
        let c = cap(c);
        async move {
            let job = h
                .submit_with_blobs(c, json!({}), blobs, o)
                .await
                .expect("submit");
            within("a blob job", job.result()).await.expect("answer")
        }
    };
    let all_clean = || {
        files_under(&wspool).len() <= 1 && files_under(&sspool).len() <= 1 // the spool roots
    };

    // 1 MiB (16 chunks and a tail) through `cat`, back intact.
    let data = pseudo_random(1024 * 1024 + 123, 7);
    let r = run("copy", vec![Blob::from_bytes(data.clone())], opts()).await;
    assert_eq!(r.result, Ok(json!({"stdout_bytes": data.len()})));
    assert_eq!(r.blobs.len(), 1);
    assert_eq!(r.blobs[0].name(), Some("stdout"));
    assert_eq!(r.blobs[0].to_vec().expect("read"), data);
    drop(r);
    // The metrics count it: one blob in on the worker, one back here, and
    // at least their bytes over the data channels.
    let received = |h: &PeerHandle| {
        let text = h.metrics_text();
        let sum = |prefix: &str| -> f64 {
            text.lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        (
            sum("jobmesh_blobs_received_total{"),
            sum("jobmesh_blob_received_bytes_total "),
            sum("jobmesh_data_channel_received_bytes_total "),
        )
    };
    let (blobs, bytes, wire) = received(&w);
    assert_eq!((blobs, bytes), (1.0, data.len() as f64));
    assert!(wire > data.len() as f64, "{wire}");
    assert_eq!(received(&sub.handle).0, 1.0);

    // Two files in, two files out, names and count through the environment.
    let a = dir.path().join("photo.jpg");
    let b = dir.path().join("notes.txt");
    std::fs::write(&a, pseudo_random(300_000, 3)).expect("write");
    std::fs::write(&b, "hello\n").expect("write");
    let r = run(
        "split",
        vec![Blob::from_file(&a), Blob::from_file(&b)],
        opts(),
    )
    .await;
    assert_eq!(r.result, Ok(json!({"inputs": 2, "first": "photo.jpg"})));
    let names: Vec<_> = r
        .blobs
        .iter()
        .map(|b| b.name().map(str::to_owned))
        .collect();
    assert_eq!(names, vec![Some("a.bin".into()), Some("b.txt".into())]);
    assert_eq!(
        r.blobs[0].to_vec().expect("read"),
        std::fs::read(&a).expect("a")
    );
    assert_eq!(r.blobs[1].to_vec().expect("read"), b"hello\n");
    drop(r);

    // A damaged chunk: the first attempt fails on its digest, the retry succeeds.
    faults.corrupt_next_chunks(1);
    let r = run("copy", vec![Blob::from_bytes(data.clone())], opts()).await;
    assert!(r.result.is_ok(), "{:?}", r.result);
    assert_eq!(r.attempts.len(), 2, "{:?}", r.attempts);
    let first = format!("{:?}", r.attempts[0]);
    assert!(first.contains("digest mismatch"), "{first}");
    assert_eq!(r.blobs[0].to_vec().expect("read"), data);
    drop(r);

    // Over the worker's 4 MiB limit: refused before any byte is sent.
    let big = Blob::from_bytes(vec![0u8; 5 * 1024 * 1024]);
    let r = run("copy", vec![big], opts()).await;
    match &r.result {
        Err(JobError::Rejected { message, .. }) => {
            assert!(message.contains("takes at most 4194304"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }

    // A failing command: its error, and its files gone.
    let r = run(
        "fail-with-blob",
        vec![Blob::from_bytes(b"x".to_vec())],
        opts(),
    )
    .await;
    match &r.result {
        Err(e) => assert!(e.to_string().contains("exit code 4"), "{e}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    eventually("spool empty after a failure", all_clean).await;

    // Cancelled while its input is in and the command runs.
    let job = sub
        .handle
        .submit_with_blobs(
            cap("hang"),
            json!({}),
            vec![Blob::from_bytes(data.clone())],
            opts(),
        )
        .await
        .expect("submit");
    eventually("the hang job to start", || files_under(&wspool).len() > 1).await;
    assert!(job.cancel().await);
    let r = within("the cancelled job", job.result())
        .await
        .expect("answer");
    assert!(
        matches!(r.result, Err(JobError::Cancelled)),
        "{:?}",
        r.result
    );
    eventually("spool empty after a cancel", all_clean).await;

    // Timed out on the worker.
    let mut o = JobOptions::from(Duration::from_millis(800));
    o.max_retries = 0;
    let r = run("hang", vec![Blob::from_bytes(data)], o).await;
    assert!(r.result.is_err(), "{:?}", r.result);
    eventually("spool empty after a timeout", all_clean).await;

    w.shutdown();
    within("worker stops", w.stopped()).await;
    sub.stop().await;
    server.stop().await;
    assert!(
        files_under(&wspool).is_empty(),
        "the spool root goes with the daemon"
    );
}
