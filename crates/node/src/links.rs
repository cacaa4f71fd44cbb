//! The link table: at most one link per remote peer, the glare rule, and
//! link ids that fence the events of a replaced link.
//!
//! A link is `Connecting` from the moment this peer dials (or answers an
//! offer) until the driver reports it open, then `Open` until it closes or
//! is replaced. Every link that leaves the table is reported once with
//! [`LinkChange::Close`], so the driver releases its connection: nothing is
//! dropped without being closed.

use std::collections::HashMap;

use jobmesh_wire::dc::DcMsg;
use jobmesh_wire::PeerId;

/// Identifies one link (one peer connection) for its whole life; never reused
/// within one node.
pub type LinkId = u64;

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
    },
    Open {
        id: LinkId,
    },
}

impl Link {
    pub(crate) fn id(&self) -> LinkId {
        match self {
            Link::Connecting { id, .. } | Link::Open { id } => *id,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct LinkTable {
    links: HashMap<PeerId, Link>,
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
            Some(Link::Open { id }) => Some(*id),
            _ => None,
        }
    }

    pub(crate) fn contains(&self, peer: &PeerId) -> bool {
        self.links.contains_key(peer)
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
            },
        );
        id
    }

    /// Removes `peer`'s link; returns it.
    pub(crate) fn remove(&mut self, peer: &PeerId) -> Option<Link> {
        self.links.remove(peer)
    }

    /// Marks `peer`'s connecting link open; returns the messages it held.
    pub(crate) fn opened(&mut self, peer: PeerId, id: LinkId) -> Vec<DcMsg> {
        match self.links.insert(peer, Link::Open { id }) {
            Some(Link::Connecting { pending, .. }) => pending,
            _ => Vec::new(),
        }
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
        self.links.drain()
    }
}
