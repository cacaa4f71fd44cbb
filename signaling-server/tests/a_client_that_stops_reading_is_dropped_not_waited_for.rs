//! The server never waits for a client that does not read. Relays to it
//! fill its socket and then its bounded relay queue, and then the senders are
//! told `peer_busy` (the relay is dropped, the sender stays). Once a frame to
//! it cannot be written within a heartbeat it is dropped (counted), its pool
//! is told, and everyone else carries on.

mod common;

use std::time::Duration;

use common::{challenge, connect, hello, http_get_with, Peer, Server};
use futures_util::{SinkExt, StreamExt};
use jobmesh_identity::Identity;
use jobmesh_signal_server::ServerConfig;
use jobmesh_wire::signal::{encode, ClientMsg, ErrorCode, Handshake, ServerMsg};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_not_waited_for() {
    // Dropped for not reading one heartbeat after its socket fills up (here
    // within milliseconds), well before it would be removed as silent (three
    // heartbeats after its hello).
    let mut server = Server::start(ServerConfig {
        client_queue: 8,
        heartbeat: Duration::from_secs(2),
        admin_token: Some("admin".into()),
        ..ServerConfig::open()
    })
    .await;
    let mut slow = connect(&server.url).await;
    let nonce = challenge(&mut slow).await;
    let slow_key = Identity::generate();
    let slow_id = slow_key.peer_id();
    slow.send(Message::text(encode(&hello(
        &slow_key, &nonce, "p", "slow",
    ))))
    .await
    .expect("send hello");
    let welcome = common::within("the welcome", slow.next()).await;
    assert!(matches!(welcome, Some(Ok(Message::Text(_)))), "{welcome:?}");
    // From here on, `slow` is never read again.

    let mut reader = Peer::join(&server.url, "p", "reader").await;
    let mut talker = Peer::join(&server.url, "p", "talker").await;
    reader.wait_member(slow_id).await;

    // Relays until the server gives up on `slow`. Every refused one is read
    // back at once, so the talker never stops reading its own socket.
    let sdp = "a".repeat(30 * 1024);
    let mut busy_read = 0;
    common::within("the slow client to be dropped", async {
        while server.count(|c| &c.clients_dropped_slow) == 0 {
            talker
                .send(&ClientMsg::Relay {
                    to: slow_id,
                    signal: Handshake::Offer {
                        sdp: sdp.clone(),
                        dial: 0,
                    },
                })
                .await;
            while busy_read < server.count(|c| &c.relays_dropped_busy) {
                let busy = talker
                    .wait_for("peer_busy at the talker", |m| {
                        matches!(
                            m,
                            ServerMsg::Error {
                                code: ErrorCode::PeerBusy,
                                ..
                            }
                        )
                    })
                    .await;
                assert!(
                    format!("{busy:?}").contains(&slow_id.to_string()),
                    "{busy:?}"
                );
                busy_read += 1;
            }
        }
    })
    .await;
    assert!(busy_read > 0, "its queue filled before it was dropped");

    reader.wait_gone(slow_id).await;
    talker.wait_gone(slow_id).await;
    assert_eq!(server.count(|c| &c.clients_dropped_slow), 1);
    assert_eq!(server.count(|c| &c.clients_expired), 0);

    // The others still relay to each other, and only they are listed.
    let offer = Handshake::Offer {
        sdp: "v=0".into(),
        dial: 0,
    };
    reader
        .send(&ClientMsg::Relay {
            to: talker.id,
            signal: offer.clone(),
        })
        .await;
    let relayed = ServerMsg::Relayed {
        from: reader.id,
        signal: offer,
    };
    talker
        .wait_for("the relay from the reader", |m| *m == relayed)
        .await;
    let (_, body) = http_get_with(
        server.addr,
        "/api/pools/p",
        "Authorization: Bearer admin\r\n",
    )
    .await;
    assert!(
        body.contains(&reader.id.to_string())
            && body.contains(&talker.id.to_string())
            && !body.contains(&slow_id.to_string()),
        "{body}"
    );
    drop(slow);
    server.stop().await;
}
