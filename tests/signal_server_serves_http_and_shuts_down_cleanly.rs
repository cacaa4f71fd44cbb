use futures_util::{SinkExt, StreamExt};
use jobmesh_testkit::{init_tracing, within, PeerGuard, SignalGuard};
use jobmesh_wire::signal::{encode, ClientMsg, ErrorCode, Hello, ServerMsg};
use jobmesh_wire::{PeerId, PROTOCOL_VERSION};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// A plain HTTP/1.1 GET; returns (status line, body).
async fn get(http: &str, path: &str) -> (String, String) {
    let addr = http.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = String::new();
    within("the HTTP response", s.read_to_string(&mut buf))
        .await
        .expect("read");
    let (head, body) = buf.split_once("\r\n\r\n").expect("headers end");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_pools_describe_the_server() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let (status, body) = get(&server.http, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok");

    let w = PeerGuard::start(server.url(), "httppool", "worker-h", &["echo"], 3);
    let watcher = PeerGuard::start(server.url(), "httppool", "watcher", &[], 0);
    watcher.wait_capable("echo", 1).await;
    let (status, body) = get(&server.http, "/api/pools").await;
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
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .expect("connect");
    let hello = ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        peer_id: PeerId::random(),
        name: "x".into(),
        pool: "p".into(),
        capabilities: Vec::new(),
        slots: 0,
    });
    ws.send(Message::text(encode(&hello))).await.expect("send");
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
