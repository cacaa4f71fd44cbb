//! jobmesh: a peer-to-peer job mesh over WebRTC data channels.
//!
//! Join a pool as a worker and/or a submitter from Rust, without the CLI:
//!
//! ```no_run
//! use std::time::Duration;
//! use jobmesh::{handler_fn, HandlerError, Invitation, Membership, Pool};
//! use serde_json::json;
//!
//! # async fn demo() -> anyhow::Result<()> {
//! // An invitation from the pool's owner (`peer pool invite`).
//! let token = std::fs::read_to_string("member.token")?;
//! let pool = Pool::builder("wss://signal.example.org/ws", "lab")
//!     .membership(Membership::Invited(Invitation::from_token(&token)?))
//!     .name("resizer-1")
//!     .handler("shout", handler_fn(|input, _ctx| async move {
//!         let text = input["text"].as_str().ok_or_else(|| HandlerError::permanent("need text"))?;
//!         Ok(json!({ "text": text.to_uppercase() }))
//!     }))?
//!     .slots(4)
//!     .start()?;
//! let report = pool.run("shout".parse()?, json!({"text": "hi"}), Duration::from_secs(10)).await?;
//! println!("{:?}", report.result);
//! pool.shutdown();
//! pool.stopped().await;
//! # Ok(()) }
//! ```
//!
//! The crates underneath, re-exported:
//! * [`wire`]: the messages on both wires;
//! * [`core`]: the sans-IO dispatcher, worker core, lifecycle and strategies;
//! * [`transport`]: the signalling client and WebRTC links;
//! * [`peer`]: the daemon and its API ([`peer::spawn`] → [`PeerHandle`]);
//! * [`signal`]: the discovery server.

use std::sync::Arc;

pub use jobmesh_core as core;
pub use jobmesh_peer as peer;
pub use jobmesh_signal_server as signal;
pub use jobmesh_transport as transport;
pub use jobmesh_wire as wire;

pub use jobmesh_core::{
    Candidate, EventKind, JobError, JobEvent, JobOptions, PickRequest, RngCore, Strategy,
    StrategyKind,
};
pub use jobmesh_peer::handlers::{handler_fn, Handler, HandlerError, JobContext};
pub use jobmesh_peer::{
    Blob, Credential, DaemonConfig, Identity, InputBlob, Invitation, JobHandle, JobReport,
    Membership, PeerHandle, ReceivedBlob, Role, StartError,
};
pub use jobmesh_wire::{Capability, DecodeError, PeerId};

/// The entry point of the Rust API: a pool membership built with [`Pool::builder`].
#[derive(Debug)]
pub struct Pool;

impl Pool {
    /// Starts describing a peer of `pool` at the signal-server `signal_url`.
    pub fn builder(signal_url: &str, pool: &str) -> PoolBuilder {
        PoolBuilder {
            config: DaemonConfig::new(signal_url, jobmesh_peer::default_name(), pool),
            ext: jobmesh_peer::Extensions::default(),
        }
    }
}

/// Builds a peer: name, handlers, slots, strategy. [`start`](Self::start)
/// returns its [`PeerHandle`] (submit, cancel, watch, shutdown).
pub struct PoolBuilder {
    config: DaemonConfig,
    ext: jobmesh_peer::Extensions,
}

impl PoolBuilder {
    /// The name shown in the pool (default: the host name).
    pub fn name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.config.name);
        self
    }

    /// Runs `capability` with `handler` (this makes the peer a worker).
    pub fn handler(mut self, capability: &str, handler: impl Handler) -> Result<Self, DecodeError> {
        let cap = Capability::new(capability)?;
        self.ext.handlers.insert(cap.clone(), Arc::new(handler));
        if !self.config.capabilities.contains(&cap) {
            self.config.capabilities.push(cap);
        }
        Ok(self)
    }

    /// Runs a built-in capability: `echo`, `sleep`, and with this crate's
    /// feature of the same name (or `media`) `thumbnail` and `ocr`; without
    /// it, [`start`](Self::start) refuses them, naming the feature.
    pub fn builtin(mut self, capability: &str) -> Result<Self, DecodeError> {
        let cap = Capability::new(capability)?;
        if !self.config.capabilities.contains(&cap) {
            self.config.capabilities.push(cap);
        }
        Ok(self)
    }

    /// How it belongs to the pool (default: the credential kept in its data
    /// dir; see [`jobmesh_peer::Membership`]).
    pub fn membership(mut self, membership: jobmesh_peer::Membership) -> Self {
        self.config.membership = membership;
        self
    }

    /// Joins an open pool (no credential): for development on one machine.
    pub fn open(self) -> Self {
        self.membership(jobmesh_peer::Membership::Open)
    }

    /// Jobs run at once (default 2).
    pub fn slots(mut self, slots: u32) -> Self {
        self.config.slots = slots;
        self
    }

    /// The default strategy for jobs this peer submits.
    pub fn strategy(mut self, kind: StrategyKind) -> Self {
        self.config.dispatcher.default_strategy = kind;
        self
    }

    /// Your own strategy, used as the default and for jobs that ask for `custom`.
    pub fn custom_strategy(mut self, strategy: impl Strategy + 'static) -> Self {
        self.ext.strategy = Some(Box::new(strategy));
        self.config.dispatcher.default_strategy = StrategyKind::Custom;
        self
    }

    /// Whether this peer may run its own jobs (default on).
    pub fn self_dispatch(mut self, on: bool) -> Self {
        self.config.dispatcher.self_dispatch = on;
        self
    }

    /// Any other setting of the daemon (timeouts, queue limit, ICE servers...).
    pub fn configure(mut self, f: impl FnOnce(&mut DaemonConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Starts the peer on the current tokio runtime.
    pub fn start(self) -> Result<PeerHandle, StartError> {
        let mut config = self.config;
        if config.capabilities.is_empty() {
            config.slots = 0;
        }
        jobmesh_peer::spawn_with(config, self.ext, tokio_util::sync::CancellationToken::new())
    }
}
