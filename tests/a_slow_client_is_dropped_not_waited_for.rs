//! Fan-out never waits for a client that does not read: its bounded queue
//! fills, it is dropped and counted, and everyone else carries on.

use std::sync::atomic::Ordering;

use futures_util::{SinkExt, StreamExt};
use jobmesh_signal::ServerConfig;
use jobmesh_testkit::{init_tracing, within, SignalGuard};
use jobmesh_wire::signal::{encode, ClientMsg, Handshake, Hello, ServerMsg};
use jobmesh_wire::{PeerId, PROTOCOL_VERSION};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn join(url: &str) -> (Ws, PeerId) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let id = PeerId::random();
    let hello = ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        peer_id: id,
        name: "c".into(),
        pool: "slow".into(),
        capabilities: Vec::new(),
        slots: 1,
    });
    ws.send(Message::text(encode(&hello))).await.expect("hello");
    let welcome = within("welcome", ws.next()).await;
    assert!(matches!(welcome, Some(Ok(Message::Text(_)))));
    (ws, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_the_others_keep_going() {
    init_tracing();
    let config = ServerConfig {
        client_queue: 64,
        ..ServerConfig::default()
    };
    let mut server = SignalGuard::start_with(config, false).await;
    let url = server.url().to_owned();
    let (_slow, slow_id) = join(&url).await; // never read again
    let (mut reader, _) = join(&url).await;
    let (mut talker, talker_id) = join(&url).await;

    // Relay big handshake messages to the slow client until its socket buffers
    // and then its queue are full: it is dropped, never waited for.
    let dropped = &server.counters.clients_dropped_slow;
    let sdp = "a".repeat(30 * 1024);
    within("the slow client to be dropped", async {
        while dropped.load(Ordering::Relaxed) == 0 {
            let relay = ClientMsg::Relay {
                to: slow_id,
                signal: Handshake::Offer { sdp: sdp.clone() },
            };
            talker
                .send(Message::text(encode(&relay)))
                .await
                .expect("send");
        }
    })
    .await;
    assert_eq!(
        dropped.load(Ordering::Relaxed),
        1,
        "only the slow client was dropped"
    );
    // The others hear that it left.
    within("the reader to see the slow client leave", async {
        loop {
            match reader.next().await {
                Some(Ok(Message::Text(t))) => {
                    if ServerMsg::decode(t.as_bytes())
                        == Ok(ServerMsg::PeerLeft { peer_id: slow_id })
                    {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("reader connection ended: {other:?}"),
            }
        }
    })
    .await;
    // The talker is still a member.
    let (status, body) = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = server.http.trim_start_matches("http://").to_owned();
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let req = format!("GET /api/pools HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = String::new();
        within("HTTP", s.read_to_string(&mut buf))
            .await
            .expect("read");
        let (head, body) = buf.split_once("\r\n\r\n").expect("response");
        (head.to_owned(), body.to_owned())
    };
    assert!(status.starts_with("HTTP/1.1 200"));
    assert!(
        body.contains(&talker_id.to_string()) && !body.contains(&slow_id.to_string()),
        "{body}"
    );
    server.stop().await;
}
