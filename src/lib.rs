//! jobmesh: a peer-to-peer job mesh over WebRTC data channels.
//!
//! This facade re-exports the workspace's crates under one name:
//! * [`wire`]: the messages on both wires;
//! * [`core`]: the sans-IO dispatcher and worker slots;
//! * [`transport`]: the signalling client and WebRTC links;
//! * [`peer`]: the daemon and its Rust API ([`peer::spawn`] → [`peer::PeerHandle`]);
//! * [`signal`]: the discovery server.

pub use jobmesh_core as core;
pub use jobmesh_peer as peer;
pub use jobmesh_signal as signal;
pub use jobmesh_transport as transport;
pub use jobmesh_wire as wire;
