//! The link table: one WebRTC link per remote peer, opened on first use,
//! kept for reuse, replaced on collision or failure.

use std::time::Instant;

use jobmesh_core::Input;
use jobmesh_transport::rtc::{self, LinkEvent, LINK_SEND_QUEUE};
use jobmesh_wire::signal::{ClientMsg, Handshake};
use jobmesh_wire::PeerId;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::{Daemon, Link, Opened};
use crate::api::Metrics;

impl Daemon {
    pub(super) fn on_handshake(&mut self, now: Instant, from: PeerId, signal: Handshake) {
        match signal {
            Handshake::Offer { sdp, dial } => {
                let pending = match self.links.remove(&from) {
                    Some(Link::Connecting {
                        answer: Some(answer),
                        link_id,
                        dial: ours,
                        pending,
                        _abort,
                    }) if self.me < from => {
                        // Both dialled at once: the lower id's offer wins, so ours stands.
                        debug!(peer = %from.short(), "offer collision: keeping our offer");
                        self.links.insert(
                            from,
                            Link::Connecting {
                                link_id,
                                answer: Some(answer),
                                dial: ours,
                                pending,
                                _abort,
                            },
                        );
                        return;
                    }
                    Some(Link::Connecting { pending, .. }) => pending,
                    Some(Link::Open(_)) => {
                        // The remote lost the link and dials again: ours is dead too.
                        self.link_lost(now, from);
                        Vec::new()
                    }
                    None => Vec::new(),
                };
                self.start_link(from, Some((sdp, dial)), pending);
            }
            Handshake::Answer { sdp, dial } => match self.links.get_mut(&from) {
                // Only the answer to this dial's offer: one to an offer the
                // peer got from an earlier process under our id is stale.
                Some(Link::Connecting {
                    answer, dial: ours, ..
                }) if *ours == dial => match answer.take() {
                    Some(tx) => {
                        let _ = tx.send(sdp);
                    }
                    None => debug!(peer = %from.short(), "unexpected answer ignored"),
                },
                _ => debug!(peer = %from.short(), dial, "stale answer ignored"),
            },
            Handshake::Candidate { .. } => {
                // Offers and answers carry every candidate (non-trickle).
                debug!(peer = %from.short(), "trickled candidate ignored");
            }
        }
    }

    /// Starts dialling `peer` (no offer) or answering its `offer` (SDP and
    /// dial tag).
    fn start_link(&mut self, peer: PeerId, offer: Option<(String, u64)>, pending: Vec<Vec<u8>>) {
        self.next_link_id += 1;
        let link_id = self.next_link_id;
        let abort = CancellationToken::new();
        let signal_out = self.signal_out.clone();
        // Our dial's own tag, or the tag of the offer we answer.
        let dial = offer
            .as_ref()
            .map_or_else(|| rand::random::<u64>().max(1), |o| o.1);
        // Overflow: the handshake message is dropped and the dial fails its deadline.
        let relay = move |mut signal: Handshake| {
            if let Handshake::Offer { dial: d, .. } | Handshake::Answer { dial: d, .. } =
                &mut signal
            {
                *d = dial;
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
                let connect = async {
                    match offer {
                        None => {
                            rtc::dial(&rtc_config, peer, link_id, relay, answer_rx, events).await
                        }
                        Some((sdp, _)) => {
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
                    .send(Opened {
                        peer,
                        link_id,
                        result,
                    })
                    .await;
            }
            .instrument(info_span!("connect", peer = %peer.short(), link_id, dialling)),
        );
        self.links.insert(
            peer,
            Link::Connecting {
                link_id,
                answer: dialling.then_some(answer_tx),
                dial,
                pending,
                _abort: abort.drop_guard(),
            },
        );
    }

    /// Dials every submitter that this worker holds jobs for, now that the
    /// pool shows it again (a restart keeps its peer id), so that it hears
    /// of them (`held`) when the link opens.
    pub(super) fn call_back_away_submitters(&mut self) {
        let away: Vec<PeerId> = self
            .worker
            .away_submitters()
            .into_iter()
            .filter(|p| !self.links.contains_key(p) && self.dispatcher.pool().get(p).is_some())
            .collect();
        for peer in away {
            info!(peer = %peer.short(), "a submitter we hold jobs for is back in the pool; dialling it");
            self.start_link(peer, None, Vec::new());
        }
    }

    pub(super) fn on_opened(&mut self, now: Instant, op: Opened) {
        if self.links.get(&op.peer).map(Link::id) != Some(op.link_id) {
            // Superseded (collision or re-dial): dropping the handle closes it.
            return;
        }
        match op.result {
            Ok(handle) => {
                info!(peer = %op.peer.short(), link_id = op.link_id, "data channel open");
                Metrics::bump(&self.metrics.links_opened);
                let pending = match self.links.insert(op.peer, Link::Open(handle)) {
                    Some(Link::Connecting { pending, .. }) => pending,
                    _ => Vec::new(),
                };
                for data in pending {
                    self.send_bytes(now, op.peer, data);
                }
                // Jobs of this peer's held here while it was away.
                self.worker.handle_link_opened(op.peer);
            }
            Err(e) => {
                warn!(peer = %op.peer.short(), error = %e, "could not open a data channel");
                self.drop_link(now, op.peer);
            }
        }
    }

    pub(super) fn on_link_event(&mut self, now: Instant, ev: LinkEvent) {
        match ev {
            LinkEvent::Message {
                peer,
                link_id,
                data,
                credit,
            } => {
                if self.links.get(&peer).map(Link::id) == Some(link_id) {
                    self.on_dc_bytes(now, peer, &data);
                }
                // Handled: its bytes go back to the receive budget.
                drop(credit);
            }
            LinkEvent::Closed { peer, link_id } => {
                if self.links.get(&peer).map(Link::id) == Some(link_id) {
                    info!(peer = %peer.short(), link_id, "data channel closed");
                    self.drop_link(now, peer);
                }
            }
        }
    }

    /// Forgets the link to `peer`: its jobs here are lost; jobs from it run on
    /// for the worker's orphan grace, their results kept for its return.
    pub(super) fn drop_link(&mut self, now: Instant, peer: PeerId) {
        self.links.remove(&peer);
        self.link_lost(now, peer);
    }

    /// Tells both cores that `peer`'s link is gone.
    fn link_lost(&mut self, now: Instant, peer: PeerId) {
        self.link_permits.remove(&peer);
        self.announced.remove(&peer);
        let _ = self.dispatcher.handle_input(now, Input::LinkClosed(peer));
        self.worker.handle_link_closed(now, peer);
    }

    pub(super) fn send_bytes(&mut self, now: Instant, peer: PeerId, data: Vec<u8>) {
        match self.links.get_mut(&peer) {
            Some(Link::Open(h)) => {
                if let Err(e) = h.try_send(data) {
                    // Overflow policy: a peer that does not drain its link is dropped.
                    warn!(peer = %peer.short(), error = %e, "cannot send; dropping the link");
                    self.drop_link(now, peer);
                }
            }
            Some(Link::Connecting { pending, .. }) => {
                if pending.len() >= LINK_SEND_QUEUE {
                    warn!(peer = %peer.short(), "too many messages waiting for the link; dropping it");
                    self.drop_link(now, peer);
                } else {
                    pending.push(data);
                }
            }
            None => self.start_link(peer, None, vec![data]),
        }
    }
}
