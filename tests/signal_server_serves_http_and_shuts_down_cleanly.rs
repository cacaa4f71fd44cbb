use futures_util::StreamExt;
use jobmesh_testkit::ws::{connect, hello, http_get, send};
use jobmesh_testkit::{init_tracing, within, PeerGuard, SignalGuard};
use jobmesh_wire::signal::{ErrorCode, ServerMsg};
use jobmesh_wire::PeerId;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_pools_describe_the_server() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let (status, body) = http_get(&server.http, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok");

    let w = PeerGuard::start(server.url(), "httppool", "worker-h", &["echo"], 3);
    let watcher = PeerGuard::start(server.url(), "httppool", "watcher", &[], 0);
    watcher.wait_capable("echo", 1).await;
    let (status, body) = http_get(&server.http, "/api/pools").await;
    assert!(status.contains("200"), "{status}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let pool = v["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .find(|p| p["name"] == "httppool")
        .expect("our pool is listed");
    let worker = pool["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .find(|p| p["name"] == "worker-h")
        .expect("the worker is listed");
    assert_eq!(worker["id"], w.handle.id().to_string());
    assert_eq!(worker["capabilities"], serde_json::json!(["echo"]));
    assert_eq!(worker["stats"]["slots"], 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_going_away() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let mut ws = connect(server.url()).await;
    send(&mut ws, &hello(PeerId::random(), "p")).await;
    assert!(matches!(
        within("welcome", ws.next()).await,
        Some(Ok(Message::Text(_)))
    ));
    server.stop().await;
    let mut saw_going_away = false;
    let close = within("the close frame", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let msg = ServerMsg::decode(t.as_bytes()).expect("valid");
                    saw_going_away |= matches!(
                        msg,
                        ServerMsg::Error {
                            code: ErrorCode::GoingAway,
                            ..
                        }
                    );
                }
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await;
    assert!(
        saw_going_away,
        "an error with code going_away precedes the close"
    );
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
}
