//! jobmesh's transport glue: bytes in, bytes out, no job logic.
//!
//! * [`signal`]: the WebSocket client to `signal-server`, with reconnect
//!   (exponential backoff + full jitter) and re-announce.
//! * [`runtime`]: webrtc's tokio runtime with large UDP socket buffers.
//! * [`rtc`]: WebRTC peer connections and their one data channel, over
//!   webrtc 0.21. Dialling (offer) and answering, each bounded by a deadline;
//!   an open channel becomes a [`rtc::LinkHandle`] with a reader and a writer task.
//! * [`probe`]: STUN mappings and TURN allocations, for `peer doctor`.
//! * [`path`]: how a link connected (the candidate pair ICE chose) and, for
//!   one that did not, what each side offered and the likeliest cause.
//!
//! Rules kept here (`docs/architecture.md` has the bounds):
//! * webrtc callbacks only forward: they `try_send` into a bounded channel or
//!   cancel a token, and return. Nothing awaits inside the driver.
//! * every channel is bounded and its overflow policy is written where it is sent to.
//! * every send buffer is bounded (`with_data_channel_send_buffer_limit`).

pub mod path;
pub mod probe;
pub mod rtc;
pub mod runtime;
pub mod signal;
