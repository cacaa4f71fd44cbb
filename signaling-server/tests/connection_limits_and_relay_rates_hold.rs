//! The limits that hold before and beyond the protocol: connections per IP
//! address, the deadline for a request head (slowloris), and the relay rate
//! of one connection. Past each, the server closes or drops and counts;
//! everyone else carries on.

mod common;

use std::time::Duration;

use common::{within, Peer, Server};
use jobmesh_identity::Identity;
use jobmesh_signal_server::limits::Limits;
use jobmesh_signal_server::ServerConfig;
use jobmesh_wire::signal::{ClientMsg, ErrorCode, Handshake, ServerMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the socket (EOF or reset).
async fn closed_by_server(s: &mut TcpStream) {
    let mut buf = [0u8; 256];
    within("the server to close the socket", async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_closed_at_the_head_deadline() {
    let mut server = Server::start(ServerConfig {
        limits: Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        ..ServerConfig::open()
    })
    .await;
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    closed_by_server(&mut slow).await;
    // A peer that says its head in time is served as usual.
    let a = Peer::join(&server.url, "p", "a").await;
    let b = Peer::join(&server.url, "p", "b").await;
    let mut a = a;
    a.wait_member(b.id).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_more_than_its_connections() {
    let mut server = Server::start(ServerConfig {
        limits: Limits {
            max_per_ip: 3,
            ..Limits::default()
        },
        ..ServerConfig::open()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    let mut extra = TcpStream::connect(server.addr).await.expect("connect");
    closed_by_server(&mut extra).await;
    assert_eq!(server.count(|c| &c.connections_refused), 1);
    // A slot given back is a slot to use: a whole join goes through once
    // the server has seen the socket close (no event says when: poll).
    held.pop();
    let ws = within("a slot to be free again", async {
        loop {
            match tokio_tungstenite::connect_async(&server.url).await {
                Ok((ws, _)) => return ws,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    let peer = Peer::join_on(ws, Identity::generate(), "p", "a").await;
    drop(peer);
    drop(held);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_flood_is_dropped_past_the_rate_and_the_sender_told_once() {
    let mut server = Server::start(ServerConfig {
        relay_rate: 5,
        ..ServerConfig::open()
    })
    .await;
    let mut flooder = Peer::join(&server.url, "p", "flooder").await;
    let mut target = Peer::join(&server.url, "p", "target").await;
    flooder.wait_member(target.id).await;
    let offer = Handshake::Offer {
        sdp: "v=0".into(),
        dial: 1,
    };
    for _ in 0..200 {
        flooder
            .send(&ClientMsg::Relay {
                to: target.id,
                signal: offer.clone(),
            })
            .await;
    }
    flooder
        .wait_for("the rate-limit error", |m| {
            matches!(
                m,
                ServerMsg::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }
            )
        })
        .await;
    // The target got at least the burst, and far from all of them.
    target
        .wait_for("the first relay", |m| {
            matches!(m, ServerMsg::Relayed { .. })
        })
        .await;
    let limited = server.count(|c| &c.relays_rate_limited);
    let relayed = server.count(|c| &c.relays);
    assert!(limited >= 150, "{limited} dropped");
    assert_eq!(
        limited + relayed,
        200,
        "each relay is either delivered or counted as dropped"
    );
    server.stop().await;
}
