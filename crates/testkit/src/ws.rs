//! A raw signalling client for tests that speak the WebSocket wire directly.

use futures_util::{SinkExt, StreamExt};
use jobmesh_identity::Identity;
use jobmesh_wire::signal::{encode, ClientMsg, Join, ServerMsg};
use jobmesh_wire::PeerId;
use tokio_tungstenite::tungstenite::Message;

use crate::within;

/// A raw client socket.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `url`.
pub async fn connect(url: &str) -> Ws {
    within(
        "the WebSocket to open",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("connect")
    .0
}

/// A valid hello of `identity` in `pool` (name `t`, no capabilities, one
/// slot), answering the challenge `nonce`.
pub fn hello(identity: &Identity, nonce: &str, pool: &str) -> ClientMsg {
    let join = Join {
        name: "t".into(),
        pool: pool.into(),
        capabilities: Vec::new(),
        slots: 1,
        credential: None,
        view: None,
    };
    ClientMsg::Hello(join.hello(identity, nonce))
}

/// Reads the server's first frame, its challenge; returns the nonce.
pub async fn challenge(ws: &mut Ws) -> String {
    match next(ws).await {
        ServerMsg::Challenge { nonce } => nonce,
        other => panic!("expected the server's challenge first, got {other:?}"),
    }
}

/// Sends one message as a text frame.
pub async fn send(ws: &mut Ws, msg: &ClientMsg) {
    ws.send(Message::text(encode(msg))).await.expect("send");
}

/// The next server message, skipping pings and pongs.
pub async fn next(ws: &mut Ws) -> ServerMsg {
    within("a server message", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return ServerMsg::decode(t.as_bytes())
                        .expect("the server sends valid messages")
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a message, got {other:?}"),
            }
        }
    })
    .await
}

/// Connects, says hello in `pool`, and reads the welcome.
pub async fn join(url: &str, pool: &str) -> (Ws, PeerId) {
    let mut ws = connect(url).await;
    let nonce = challenge(&mut ws).await;
    let identity = Identity::generate();
    let id = identity.peer_id();
    send(&mut ws, &hello(&identity, &nonce, pool)).await;
    let welcome = next(&mut ws).await;
    assert!(matches!(welcome, ServerMsg::Welcome { .. }), "{welcome:?}");
    (ws, id)
}
