//! A compromised signal-server, for tests of what one can and cannot do.
//!
//! [`MitmSignal`] is a WebSocket proxy in front of a real signal-server:
//! peers connect to it as to any server, and it passes every frame through,
//! except that between the two peers of each [`Divert`] it routes the
//! handshake to an attacker and disguises the attacker as the other side:
//! a relay from either of the pair to the other goes to the attacker, and a
//! relay from the attacker to either shows as coming from the other. The
//! attacker (a [`RawPeer`](crate::RawPeer) joined directly to the real
//! server) can then answer in a victim's name, dial the other victim in the
//! first one's name, and sit in the middle of both connections with its own
//! DTLS certificates: the SDP each victim receives carries the attacker's
//! fingerprint instead of the other victim's. This is everything a
//! signal-server controls.

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use jobmesh_wire::signal::{encode, ClientMsg, ServerMsg};
use jobmesh_wire::PeerId;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Between `a` and `b`, every handshake goes through `via`.
#[derive(Debug, Clone, Copy)]
pub struct Divert {
    /// One victim.
    pub a: PeerId,
    /// The other.
    pub b: PeerId,
    /// The attacker.
    pub via: PeerId,
}

impl Divert {
    /// The other victim of `me`, if `me` is one.
    fn other(&self, me: PeerId) -> Option<PeerId> {
        if me == self.a {
            Some(self.b)
        } else if me == self.b {
            Some(self.a)
        } else {
            None
        }
    }
}

/// The proxy. Stops when dropped.
pub struct MitmSignal {
    url: String,
    diverts: Arc<Mutex<Vec<Divert>>>,
    cancel: CancellationToken,
}

impl MitmSignal {
    /// Listens on 127.0.0.1:0 in front of the server at `upstream`
    /// (`ws://…/ws`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
        let diverts: Arc<Mutex<Vec<Divert>>> = Arc::default();
        let cancel = CancellationToken::new();
        let (upstream, d, c) = (upstream.to_owned(), diverts.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    () = c.cancelled() => return,
                    r = listener.accept() => match r { Ok(a) => a, Err(_) => return },
                };
                let (upstream, d, c) = (upstream.clone(), d.clone(), c.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = c.cancelled() => {}
                        () = proxy(tcp, &upstream, d) => {}
                    }
                });
            }
        });
        Self {
            url,
            diverts,
            cancel,
        }
    }

    /// The URL peers connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// From now on, handshakes between `divert.a` and `divert.b` go
    /// through `divert.via`.
    pub fn divert(&self, divert: Divert) {
        self.diverts.lock().expect("lock").push(divert);
    }
}

impl Drop for MitmSignal {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// One client connection, passed through to `upstream` with relays rewritten.
async fn proxy(tcp: tokio::net::TcpStream, upstream: &str, diverts: Arc<Mutex<Vec<Divert>>>) {
    let Ok(client) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let Ok((server, _)) = tokio_tungstenite::connect_async(upstream).await else {
        return;
    };
    let (mut to_client, mut from_client) = client.split();
    let (mut to_server, mut from_server) = server.split();
    // Whose connection this is: learned from its hello.
    let me: Arc<Mutex<Option<PeerId>>> = Arc::default();
    let rule = |me: Option<PeerId>| {
        let diverts = diverts.lock().expect("lock");
        me.and_then(|me| {
            diverts
                .iter()
                .find_map(|d| d.other(me).map(|other| (other, d.via)))
        })
    };
    let up = async {
        while let Some(Ok(frame)) = from_client.next().await {
            let frame = match &frame {
                Message::Text(t) => match ClientMsg::decode(t.as_bytes()) {
                    Ok(ClientMsg::Hello(h)) => {
                        *me.lock().expect("lock") = Some(h.peer_id);
                        frame
                    }
                    Ok(ClientMsg::Relay { to, signal }) => {
                        let to = match rule(*me.lock().expect("lock")) {
                            Some((other, via)) if to == other => via,
                            _ => to,
                        };
                        Message::text(encode(&ClientMsg::Relay { to, signal }))
                    }
                    _ => frame,
                },
                _ => frame,
            };
            if to_server.send(frame).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        while let Some(Ok(frame)) = from_server.next().await {
            let frame = match &frame {
                Message::Text(t) => match ServerMsg::decode(t.as_bytes()) {
                    Ok(ServerMsg::Relayed { from, signal }) => {
                        let from = match rule(*me.lock().expect("lock")) {
                            Some((other, via)) if from == via => other,
                            _ => from,
                        };
                        Message::text(encode(&ServerMsg::Relayed { from, signal }))
                    }
                    _ => frame,
                },
                _ => frame,
            };
            if to_client.send(frame).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
