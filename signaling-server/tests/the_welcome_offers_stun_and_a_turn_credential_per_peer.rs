//! A signal-server with STUN and TURN servers configured offers them in
//! every welcome, TURN with a credential in coturn's shared-secret scheme
//! minted for that peer: `EXPIRY:PEER-ID` and base64(HMAC-SHA1) of it, valid
//! for the configured time. Peers get different credentials; no peer ever
//! sees the secret.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{connect, Peer, Server};
use jobmesh_identity::Identity;
use jobmesh_signal_server::ice::{credential, IceOffer, Turn};
use jobmesh_signal_server::ServerConfig;
use jobmesh_wire::signal::ServerMsg;

const SECRET: &str = "a-secret-shared-with-coturn";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_welcome_offers_stun_and_a_turn_credential_per_peer() {
    let server = Server::start(ServerConfig {
        ice: IceOffer {
            stun_urls: vec!["stun:203.0.113.7:3478".into()],
            turn: Some(Turn {
                urls: vec![
                    "turn:203.0.113.7:3478?transport=udp".into(),
                    "turn:203.0.113.7:3478?transport=tcp".into(),
                ],
                secret: SECRET.into(),
                ttl: Duration::from_secs(600),
            }),
        },
        ..ServerConfig::open()
    })
    .await;
    let mut usernames = Vec::new();
    for name in ["a", "b"] {
        let identity = Identity::generate();
        let id = identity.peer_id();
        let mut peer = Peer::reading(connect(&server.url).await, identity).await;
        peer.send(&peer.hello("lab", name)).await;
        let ServerMsg::Welcome { ice_servers, .. } = peer.next().await else {
            panic!("expected a welcome");
        };
        assert_eq!(ice_servers.len(), 2, "{ice_servers:?}");
        assert_eq!(ice_servers[0].urls, ["stun:203.0.113.7:3478"]);
        assert_eq!(
            (
                ice_servers[0].username.as_ref(),
                ice_servers[0].credential.as_ref()
            ),
            (None, None)
        );
        let turn = &ice_servers[1];
        assert_eq!(turn.urls.len(), 2);
        let username = turn.username.clone().expect("a TURN username");
        let (expiry, who) = username.split_once(':').expect("EXPIRY:PEER-ID");
        assert_eq!(who, id.to_string());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let expiry: u64 = expiry.parse().expect("Unix seconds");
        assert!(
            (now + 590..=now + 610).contains(&expiry),
            "{expiry} vs {now}"
        );
        assert_eq!(
            turn.credential.as_deref(),
            Some(credential(SECRET.as_bytes(), &username).as_str())
        );
        assert!(!format!("{ice_servers:?}").contains(SECRET));
        usernames.push(username);
    }
    assert_ne!(usernames[0], usernames[1]);

    // Without any configured, a welcome offers none (and says nothing of them).
    let plain = Server::start(ServerConfig::open()).await;
    let mut peer = Peer::reading(connect(&plain.url).await, Identity::generate()).await;
    peer.send(&peer.hello("lab", "c")).await;
    let ServerMsg::Welcome { ice_servers, .. } = peer.next().await else {
        panic!("expected a welcome");
    };
    assert!(ice_servers.is_empty());
}
