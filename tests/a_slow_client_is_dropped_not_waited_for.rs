//! Fan-out never waits for a client that does not read: its bounded queue
//! fills, it is dropped and counted, and everyone else carries on.

use std::sync::atomic::Ordering;

use futures_util::{SinkExt, StreamExt};
use jobmesh_signal::ServerConfig;
use jobmesh_testkit::ws::{http_get, join};
use jobmesh_testkit::{init_tracing, within, SignalGuard};
use jobmesh_wire::signal::{encode, ClientMsg, Handshake, ServerMsg};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_the_others_keep_going() {
    init_tracing();
    let config = ServerConfig {
        client_queue: 64,
        ..ServerConfig::default()
    };
    let mut server = SignalGuard::start_with(config, false).await;
    let url = server.url().to_owned();
    let (_slow, slow_id) = join(&url, "slow").await; // never read again
    let (mut reader, _) = join(&url, "slow").await;
    let (mut talker, talker_id) = join(&url, "slow").await;

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
    let (status, body) = http_get(&server.http, "/api/pools").await;
    assert!(status.starts_with("HTTP/1.1 200"));
    assert!(
        body.contains(&talker_id.to_string()) && !body.contains(&slow_id.to_string()),
        "{body}"
    );
    server.stop().await;
}
