//! The connections behind the node's links: the node decides which link
//! exists (dial, answer, glare, replace, drop); this starts their dial and
//! answer tasks, hands them the remote's answer, sends on them, and reports
//! what happened to each back to the node.

use std::time::Instant;

use jobmesh_identity::Nonce;
use jobmesh_node::{LinkId, NodeInput};
use jobmesh_transport::rtc::{self, LinkEvent};
use jobmesh_wire::link::Binding;
use jobmesh_wire::signal::{ClientMsg, Handshake};
use jobmesh_wire::PeerId;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn, Instrument};

use super::{Connected, Connection, Daemon};
use crate::api::Metrics;
use crate::view::MAX_LINK_ERRORS;

impl Daemon {
    /// Starts dialling `peer` (no offer) or answering its `offer`, as the
    /// node's link `link_id` whose handshake carries `tag`.
    pub(super) fn start_link(
        &mut self,
        peer: PeerId,
        link_id: LinkId,
        tag: u64,
        offer: Option<String>,
    ) {
        let abort = CancellationToken::new();
        let signal_out = self.signal_out.clone();
        // Overflow: the handshake message is dropped and the dial fails its deadline.
        let relay = move |mut signal: Handshake| {
            if let Handshake::Offer { dial, .. } | Handshake::Answer { dial, .. } = &mut signal {
                *dial = tag;
            }
            signal_out
                .try_send(ClientMsg::Relay { to: peer, signal })
                .is_ok()
        };
        let rtc_config = self.config.rtc.clone();
        let events = self.link_tx.clone();
        let opened = self.opened_tx.clone();
        let (answer_tx, answer_rx) = oneshot::channel();
        let dialling = offer.is_none();
        let task_abort = abort.clone();
        self.tracker.spawn(
            async move {
                let started = Instant::now();
                let connect = async {
                    match offer {
                        None => {
                            rtc::dial(&rtc_config, peer, link_id, relay, answer_rx, events).await
                        }
                        Some(sdp) => {
                            rtc::answer(&rtc_config, peer, link_id, sdp, relay, events).await
                        }
                    }
                };
                let result = tokio::select! {
                    biased;
                    () = task_abort.cancelled() => return,
                    r = connect => r,
                };
                // Overflow: waits; the daemon drains this channel every loop.
                let _ = opened
                    .send(Connected {
                        peer,
                        link_id,
                        result,
                        took: started.elapsed(),
                    })
                    .await;
            }
            .instrument(info_span!("connect", peer = %peer.short(), link_id, dialling)),
        );
        self.links.insert(
            link_id,
            Connection::Connecting {
                answer: dialling.then_some(answer_tx),
                _abort: abort.drop_guard(),
            },
        );
    }

    /// Hands a dial its remote's answer.
    pub(super) fn deliver_answer(&mut self, link_id: LinkId, sdp: String) {
        if let Some(Connection::Connecting { answer, .. }) = self.links.get_mut(&link_id) {
            if let Some(tx) = answer.take() {
                let _ = tx.send(sdp);
            }
        }
    }

    pub(super) fn on_opened(&mut self, now: Instant, op: Connected) {
        let Some(link) = self.links.get_mut(&op.link_id) else {
            // Released by the node meanwhile: dropping the handle closes it.
            return;
        };
        let (peer, link_id) = (op.peer, op.link_id);
        match op.result {
            Ok(handle) => {
                Metrics::bump(&self.metrics.links_opened);
                self.telemetry.link_opened(op.took, handle.path());
                self.pool_tx
                    .send_if_modified(|s| s.link_errors.remove(&peer).is_some());
                let fingerprints = handle.fingerprints();
                *link = Connection::Open(handle);
                self.publish_links();
                let binding = Binding {
                    local: fingerprints.local,
                    remote: fingerprints.remote,
                    nonce: Nonce::random(),
                };
                self.feed(
                    now,
                    NodeInput::LinkOpened {
                        peer,
                        link: link_id,
                        binding,
                    },
                );
            }
            Err(e) => {
                warn!(peer = %peer.short(), error = %e, "could not open a data channel");
                self.telemetry.link_failed();
                let why = e.to_string();
                self.pool_tx.send_modify(|s| {
                    if s.link_errors.len() >= MAX_LINK_ERRORS && !s.link_errors.contains_key(&peer)
                    {
                        s.link_errors.pop_first();
                    }
                    s.link_errors.insert(peer, why.clone());
                });
                self.feed(
                    now,
                    NodeInput::LinkFailed {
                        peer,
                        link: link_id,
                        why,
                    },
                );
            }
        }
    }

    /// Shows how each open link connected in the pool snapshot (`peer
    /// peers`, `/api/status`).
    pub(super) fn publish_links(&self) {
        let links = self
            .links
            .values()
            .filter_map(|c| match c {
                Connection::Open(h) => Some((h.peer(), h.path()?)),
                Connection::Connecting { .. } => None,
            })
            .collect();
        self.pool_tx.send_if_modified(|s| {
            let changed = s.links != links;
            s.links = links;
            changed
        });
    }

    pub(super) fn on_link_event(&mut self, now: Instant, ev: LinkEvent) {
        match ev {
            LinkEvent::Message {
                peer,
                link_id,
                data,
                credit,
            } => {
                if self.node.is_current_link(&peer, link_id) {
                    self.on_dc_bytes(now, peer, link_id, &data);
                } else {
                    debug!(peer = %peer.short(), link_id, "message of a released link dropped");
                }
                // Handled: its bytes go back to the receive budget.
                drop(credit);
            }
            LinkEvent::Closed { peer, link_id } => {
                self.feed(
                    now,
                    NodeInput::LinkClosed {
                        peer,
                        link: link_id,
                    },
                );
            }
        }
    }

    /// Sends on an open link; one that cannot take the message is reported
    /// closed.
    pub(super) fn send_bytes(
        &mut self,
        now: Instant,
        peer: PeerId,
        link_id: LinkId,
        data: Vec<u8>,
    ) {
        let Some(Connection::Open(h)) = self.links.get(&link_id) else {
            debug!(peer = %peer.short(), link_id, "message for a released link dropped");
            return;
        };
        if let Err(e) = h.try_send(data) {
            // Overflow policy: a peer that does not drain its link is dropped.
            warn!(peer = %peer.short(), error = %e, "cannot send; dropping the link");
            self.feed(
                now,
                NodeInput::LinkClosed {
                    peer,
                    link: link_id,
                },
            );
        }
    }
}
