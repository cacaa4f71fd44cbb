//! `capabilities` updates: in a closed pool the server admits the new list
//! as it would a hello with it — a list the member's credential does not
//! cover is refused with `capabilities_refused` (not fatal; the pool keeps
//! seeing the list before), one it covers reaches the other members' views.

mod common;

use std::collections::HashMap;

use common::{cap, Peer, Server};
use jobmesh_identity::Identity;
use jobmesh_signal_server::{Admission, ServerConfig};
use jobmesh_trust::{Invitation, Role};
use jobmesh_wire::signal::{ClientMsg, ErrorCode, Join, ServerMsg};

/// A member of pool `lab` (owned by `owner`) whose credential lets it run
/// `echo` and `ocr`, joined with `echo`.
async fn member(url: &str, owner: &Identity, name: &str) -> Peer {
    let me = Identity::generate();
    let credential = Invitation::mint(
        owner,
        "lab",
        vec![Role::Worker, Role::Submitter],
        vec!["echo".into(), "ocr".into()],
        u64::MAX / 2,
    )
    .expect("an invitation")
    .redeem(&me.public());
    let ws = common::connect(url).await;
    let mut peer = Peer::reading(ws, me).await;
    let join = Join {
        name: name.into(),
        pool: "lab".into(),
        capabilities: vec![cap("echo")],
        slots: 2,
        credential: Some(credential),
        view: None,
    };
    let hello = ClientMsg::Hello(join.hello(&peer.identity, &peer.nonce));
    peer.send(&hello).await;
    match peer.next().await {
        ServerMsg::Welcome { .. } => {}
        other => panic!("expected a welcome, got {other:?}"),
    }
    peer.wait_view("the first synced view", |v| v.is_synced())
        .await;
    peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capabilities_update_is_admitted_as_a_hello_with_it_would_be() {
    let owner = Identity::generate();
    let server = Server::start(ServerConfig {
        admission: Admission {
            pools: HashMap::from([("lab".to_owned(), owner.public())]),
            open: false,
        },
        ..ServerConfig::default()
    })
    .await;
    let mut a = member(&server.url, &owner, "a").await;
    let mut b = member(&server.url, &owner, "b").await;
    let a_id = a.id;
    b.wait_view("a in b's view", |v| v.get(&a_id).is_some())
        .await;

    // Beyond the credential: refused, not fatal, nothing changes.
    a.send(&ClientMsg::Capabilities {
        capabilities: vec![cap("echo"), cap("thumbnail")],
    })
    .await;
    match a.next().await {
        ServerMsg::Error { code, message } => {
            assert_eq!(code, ErrorCode::CapabilitiesRefused);
            assert!(message.contains("thumbnail"), "{message}");
        }
        other => panic!("expected capabilities_refused, got {other:?}"),
    }

    // Within it: the other member's view follows.
    a.send(&ClientMsg::Capabilities {
        capabilities: vec![cap("ocr")],
    })
    .await;
    b.wait_view("a runs ocr only", |v| {
        v.get(&a_id)
            .is_some_and(|p| p.capabilities == vec![cap("ocr")])
    })
    .await;
    // And a is still connected: it hears b's stats.
    let b_id = b.id;
    b.send(&ClientMsg::Stats {
        stats: jobmesh_wire::Stats {
            slots: 5,
            seq: 9,
            ..Default::default()
        },
    })
    .await;
    a.wait_view("b's new stats", |v| {
        v.get(&b_id).is_some_and(|p| p.stats.slots == 5)
    })
    .await;
}
