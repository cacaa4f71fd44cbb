use std::time::Duration;

use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, SignalGuard};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signal_server_never_sees_a_job_payload() {
    init_tracing();
    let mut server = SignalGuard::start_tapped().await;
    let _worker = PeerGuard::start(server.url(), "t4", "worker", &["echo"], 2);
    let sub = PeerGuard::start(server.url(), "t4", "sub", &[], 0);
    sub.wait_capable("echo", 1).await;
    let marker = format!("payload-marker-{}", uuid::Uuid::new_v4());
    let r = within(
        "the echo job",
        sub.handle.run(
            cap("echo"),
            json!({ "secret": marker }),
            Duration::from_secs(15),
        ),
    )
    .await
    .expect("answer");
    assert_eq!(r.result, Ok(json!({ "secret": marker })));
    server.stop().await;
    let frames = server.tapped_frames();
    // The tap saw the handshake, so it was watching the right traffic...
    assert!(
        frames
            .iter()
            .any(|f| String::from_utf8_lossy(f).contains("\"offer\"")),
        "the tap recorded the SDP offer relay"
    );
    // ...and none of it carried the job's payload.
    for f in &frames {
        assert!(
            !String::from_utf8_lossy(f).contains(&marker),
            "signal-server received the payload"
        );
    }
}
