use std::time::Duration;

use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, SignalGuard};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_job_returns_its_input_over_a_data_channel() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let worker = PeerGuard::start(server.url(), "t1", "worker", &["echo"], 2);
    let submitter = PeerGuard::start(server.url(), "t1", "submitter", &[], 0);
    submitter.wait_capable("echo", 1).await;

    let input = json!({"hello": "mesh", "n": [1, 2, 3]});
    let report = within(
        "the echo job",
        submitter
            .handle
            .run(cap("echo"), input.clone(), Duration::from_secs(15)),
    )
    .await
    .expect("daemon answers");
    assert_eq!(report.result, Ok(input));
    let (id, name) = report.worker.expect("a worker ran it");
    assert_eq!(id, worker.handle.id());
    assert_eq!(name, "worker");
    assert_eq!(
        jobmesh_peer::Metrics::get(&worker.handle.metrics().links_opened),
        1,
        "the job went over a data channel"
    );
    server.stop().await;
}
