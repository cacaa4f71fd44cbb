//! The link table: at most one link per remote peer, the glare rule, and
//! link ids that fence the events of a replaced link.
//!
//! A link is `Connecting` from the moment this peer dials (or answers an
//! offer) until the driver reports its channel open, then `Binding` while
//! the link handshake runs (`jobmesh_wire::link`), then `Open` until it
//! closes or is replaced. Messages for it wait until it is `Open`. Every link that leaves the table is reported once with
//! [`LinkChange::Close`], so the driver releases its connection: nothing is
//! dropped without being closed.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use jobmesh_identity::Signature;
use jobmesh_wire::dc::DcMsg;
use jobmesh_wire::link::Binding;
use jobmesh_wire::PeerId;

use crate::binding::RemoteHello;

/// Identifies one link (one peer connection) for its whole life; never reused
/// within one node.
pub type LinkId = u64;

/// Most links a node holds (open or opening). Past it an offer from a peer
/// without a link is not answered (the remote's dial fails its deadline);
/// this peer's own dials are not limited (they are bounded by the pool).
pub const MAX_LINKS: usize = 4096;

/// Most messages waiting for a link to open. Past it the link is dropped (a
/// peer that cannot be reached is lost to us; its jobs are re-dispatched).
pub const PENDING_PER_LINK: usize = 1024;

#[derive(Debug)]
pub(crate) enum Link {
    Connecting {
        id: LinkId,
        /// The dial's tag (ours when dialling, the remote's when answering).
        tag: u64,
        /// Dialling: the answer has not come yet.
        awaiting_answer: bool,
        /// Messages to send once open, oldest first.
        pending: Vec<DcMsg>,
        /// The remote's `link_hello`, if it came before the driver said the
        /// channel is open (the two travel different ways).
        early: Option<RemoteHello>,
    },
    Binding {
        id: LinkId,
        pending: Vec<DcMsg>,
        /// This side's view of the connection and its nonce.
        binding: Binding,
        /// The remote's hello, once it came (this side's proof then went).
        remote: Option<RemoteHello>,
        /// The remote's proof, if it came before its hello: checked once the
        /// hello comes (or the deadline closes the link).
        early_proof: Option<Signature>,
        /// When the handshake gives up.
        deadline: Instant,
    },
    Open {
        id: LinkId,
        /// The remote shares this peer's handover directory: blobs between
        /// the two go as files in it.
        handover: bool,
    },
}

impl Link {
    pub(crate) fn id(&self) -> LinkId {
        match self {
            Link::Connecting { id, .. } | Link::Binding { id, .. } | Link::Open { id, .. } => *id,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct LinkTable {
    links: HashMap<PeerId, Link>,
    /// The deadlines of the `Binding` links.
    deadlines: BTreeSet<(Instant, PeerId)>,
    next_id: LinkId,
}

impl LinkTable {
    pub(crate) fn get(&self, peer: &PeerId) -> Option<&Link> {
        self.links.get(peer)
    }

    pub(crate) fn get_mut(&mut self, peer: &PeerId) -> Option<&mut Link> {
        self.links.get_mut(peer)
    }

    /// The id of `peer`'s link if it is `link` (events of any other are stale).
    pub(crate) fn is_current(&self, peer: &PeerId, link: LinkId) -> bool {
        self.links.get(peer).map(Link::id) == Some(link)
    }

    /// The open link to `peer`, if any.
    pub(crate) fn open(&self, peer: &PeerId) -> Option<LinkId> {
        match self.links.get(peer) {
            Some(Link::Open { id, .. }) => Some(*id),
            _ => None,
        }
    }

    /// Whether `peer`'s link is open and shares this peer's handover
    /// directory.
    pub(crate) fn handover(&self, peer: &PeerId) -> bool {
        matches!(
            self.links.get(peer),
            Some(Link::Open { handover: true, .. })
        )
    }

    /// Records whether `peer`'s open link shares the handover directory.
    pub(crate) fn set_handover(&mut self, peer: &PeerId, shared: bool) {
        if let Some(Link::Open { handover, .. }) = self.links.get_mut(peer) {
            *handover = shared;
        }
    }

    pub(crate) fn contains(&self, peer: &PeerId) -> bool {
        self.links.contains_key(peer)
    }

    /// How many links there are (open or opening).
    pub(crate) fn len(&self) -> usize {
        self.links.len()
    }

    /// Starts a link to `peer` (a dial with our `tag`, or an answer to the
    /// remote's offer tagged `tag`); returns its id.
    pub(crate) fn start(
        &mut self,
        peer: PeerId,
        tag: u64,
        dialling: bool,
        pending: Vec<DcMsg>,
    ) -> LinkId {
        self.next_id += 1;
        let id = self.next_id;
        self.links.insert(
            peer,
            Link::Connecting {
                id,
                tag,
                awaiting_answer: dialling,
                pending,
                early: None,
            },
        );
        id
    }

    /// Removes `peer`'s link; returns it.
    pub(crate) fn remove(&mut self, peer: &PeerId) -> Option<Link> {
        let link = self.links.remove(peer);
        if let Some(Link::Binding { deadline, .. }) = &link {
            self.deadlines.remove(&(*deadline, *peer));
        }
        link
    }

    /// `peer`'s connecting link `id` has its channel open: its handshake
    /// starts, and must end by `deadline`. Returns the remote's hello if it
    /// came already.
    pub(crate) fn binding(
        &mut self,
        peer: PeerId,
        id: LinkId,
        binding: Binding,
        deadline: Instant,
    ) -> Option<RemoteHello> {
        let (pending, early) = match self.links.remove(&peer) {
            Some(Link::Connecting { pending, early, .. }) => (pending, early),
            _ => (Vec::new(), None),
        };
        self.links.insert(
            peer,
            Link::Binding {
                id,
                pending,
                binding,
                remote: None,
                early_proof: None,
                deadline,
            },
        );
        self.deadlines.insert((deadline, peer));
        early
    }

    /// Marks `peer`'s binding link open (its handshake passed); returns the
    /// messages it held.
    pub(crate) fn opened(&mut self, peer: PeerId) -> Vec<DcMsg> {
        match self.remove(&peer) {
            Some(Link::Binding { id, pending, .. }) => {
                self.links.insert(
                    peer,
                    Link::Open {
                        id,
                        handover: false,
                    },
                );
                pending
            }
            Some(other) => {
                self.links.insert(peer, other);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// The messages waiting for `peer`'s link to open, if it is not open yet.
    pub(crate) fn pending_mut(&mut self, peer: &PeerId) -> Option<&mut Vec<DcMsg>> {
        match self.links.get_mut(peer) {
            Some(Link::Connecting { pending, .. } | Link::Binding { pending, .. }) => Some(pending),
            _ => None,
        }
    }

    /// The earliest handshake deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Peers whose handshake passed its deadline by `now`.
    pub(crate) fn overdue(&self, now: Instant) -> Vec<PeerId> {
        self.deadlines
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, p)| *p)
            .collect()
    }

    /// Peers whose dial has had no answer, in id order.
    pub(crate) fn unanswered_dials(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, l)| {
                matches!(
                    l,
                    Link::Connecting {
                        awaiting_answer: true,
                        ..
                    }
                )
            })
            .map(|(p, _)| *p)
            .collect();
        peers.sort();
        peers
    }

    /// Links of every peer, for a final close.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (PeerId, Link)> + '_ {
        self.deadlines.clear();
        self.links.drain()
    }
}
