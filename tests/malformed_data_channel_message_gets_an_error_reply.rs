use std::time::Duration;

use jobmesh_peer::Metrics;
use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, RawPeer, SignalGuard};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_error_replies_and_the_worker_keeps_serving() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let worker = PeerGuard::start(server.url(), "t8", "worker", &["echo", "sleep"], 2);
    let mut raw = RawPeer::join(server.url(), "t8").await;
    let w = raw.member("worker").await;
    assert_eq!(w, worker.handle.id());
    let link = raw.dial(w).await;

    let job_id = uuid::Uuid::new_v4();
    let hostile: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        br#"{"type":"teleport"}"#.to_vec(),
        json!({"type": "submit", "job_id": job_id, "capability": 7}).to_string().into_bytes(),
        json!({"type": "submit", "job_id": job_id, "attempt": 1, "capability": "echo", "input": 1, "timeout_ms": 0})
            .to_string()
            .into_bytes(),
        vec![0xff, 0xfe, 0x00],
    ];
    for bytes in &hostile {
        link.try_send(bytes.clone()).expect("queued");
        let reply = raw.recv_json().await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert!(
            reply["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{reply}"
        );
    }
    // The broken submits named their job id; the error echoes it.
    link.try_send(hostile[2].clone()).expect("queued");
    assert_eq!(raw.recv_json().await["job_id"], json!(job_id));

    // A blob chunk of no current transfer is dropped and counted, never
    // answered (after a cancel, chunks in flight are normal): the next reply
    // is the one to the submit below.
    let chunk = jobmesh_wire::blob::ChunkHeader {
        direction: jobmesh_wire::blob::Direction::Input,
        job_id,
        attempt: 1,
        blob: 0,
        offset: 0,
    }
    .encode(b"bytes");
    link.try_send(chunk).expect("queued");

    // Bad input for a known capability is a rejection, not a crash.
    let bad = json!({"type": "submit", "job_id": job_id, "attempt": 1, "capability": "sleep", "input": {"ms": "soon"}, "timeout_ms": 5000});
    link.try_send(bad.to_string().into_bytes()).expect("queued");
    let reply = raw.recv_json().await;
    assert_eq!(reply["type"], "rejected");
    assert_eq!(reply["reason"], "bad_input");
    assert_eq!(reply["attempt"], 1, "replies echo the attempt");

    // And the worker still serves a good job on the same link...
    let good = json!({"type": "submit", "job_id": job_id, "attempt": 2, "capability": "echo", "input": {"ok": true}, "timeout_ms": 5000});
    link.try_send(good.to_string().into_bytes())
        .expect("queued");
    assert_eq!(raw.recv_json().await["type"], "accepted");
    let result = raw.recv_json().await;
    assert_eq!(result["type"], "result");
    assert_eq!(result["attempt"], 2);
    assert_eq!(
        result["outcome"],
        json!({"status": "ok", "value": {"ok": true}})
    );
    assert_eq!(Metrics::get(&worker.handle.metrics().malformed_messages), 6);
    assert_eq!(Metrics::get(&worker.handle.metrics().stale_chunks), 1);

    // Blobs announced and accepted but never sent: the job's timeout still
    // frees the slot, with a retryable error (the sender may be the problem).
    let stalled = uuid::Uuid::new_v4();
    let blobs = json!({"type": "blobs", "job_id": stalled, "attempt": 1, "direction": "input",
        "blobs": [{"index": 0, "size": 1000, "blake3": "ab".repeat(32)}]});
    let submit = json!({"type": "submit", "job_id": stalled, "attempt": 1, "capability": "echo", "input": 1, "timeout_ms": 300});
    link.try_send(blobs.to_string().into_bytes())
        .expect("queued");
    link.try_send(submit.to_string().into_bytes())
        .expect("queued");
    assert_eq!(raw.recv_json().await["type"], "accepted");
    let result = raw.recv_json().await;
    assert_eq!(result["type"], "result", "{result}");
    assert_eq!(result["outcome"]["retryable"], true, "{result}");
    assert!(
        result["outcome"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("waiting for the input blobs")),
        "{result}"
    );

    // ...and for everyone else.
    let sub = PeerGuard::start(server.url(), "t8", "sub", &[], 0);
    sub.wait_capable("echo", 1).await;
    let r = within(
        "a normal job",
        sub.handle
            .run(cap("echo"), json!(5), Duration::from_secs(15)),
    )
    .await
    .expect("answer");
    assert_eq!(r.result, Ok(json!(5)));
    server.stop().await;
}
