//! Fan-out never waits for a client that does not read: once its socket
//! buffers and then its bounded queue are full, it is dropped (counted), its
//! departure is announced, and everyone else carries on.

mod common;

use common::{connect, hello, http_get, Peer, Server};
use futures_util::{SinkExt, StreamExt};
use jobmesh_signal::ServerConfig;
use jobmesh_wire::signal::{encode, ClientMsg, Handshake, ServerMsg};
use jobmesh_wire::PeerId;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_not_waited_for() {
    let mut server = Server::start(ServerConfig {
        client_queue: 8,
        ..ServerConfig::default()
    })
    .await;
    let mut slow = connect(&server.url).await;
    let slow_id = PeerId::random();
    slow.send(Message::text(encode(&hello(slow_id, "p", "slow"))))
        .await
        .expect("send hello");
    let welcome = common::within("the welcome", slow.next()).await;
    assert!(matches!(welcome, Some(Ok(Message::Text(_)))), "{welcome:?}");
    // From here on, `slow` is never read again.

    let mut reader = Peer::join(&server.url, "p", "reader").await;
    let mut talker = Peer::join(&server.url, "p", "talker").await;
    assert!(matches!(reader.next().await, ServerMsg::PeerJoined { .. }));

    let sdp = "a".repeat(30 * 1024);
    common::within("the slow client to be dropped", async {
        while server.count(|c| &c.clients_dropped_slow) == 0 {
            talker
                .send(&ClientMsg::Relay {
                    to: slow_id,
                    signal: Handshake::Offer { sdp: sdp.clone() },
                })
                .await;
        }
    })
    .await;

    let left = |m: &ServerMsg| *m == ServerMsg::PeerLeft { peer_id: slow_id };
    reader.wait_for("peer_left at the reader", left).await;
    // The talker may first hear unknown_peer for relays sent after the drop.
    talker.wait_for("peer_left at the talker", left).await;
    assert_eq!(server.count(|c| &c.clients_dropped_slow), 1);
    assert_eq!(server.count(|c| &c.clients_expired), 0);

    // The others still relay to each other, and only they are listed.
    let offer = Handshake::Offer { sdp: "v=0".into() };
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
    let (_, body) = http_get(server.addr, "/api/pools").await;
    assert!(
        body.contains(&reader.id.to_string())
            && body.contains(&talker.id.to_string())
            && !body.contains(&slow_id.to_string()),
        "{body}"
    );
    drop(slow);
    server.stop().await;
}
