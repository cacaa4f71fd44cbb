//! The physical limit in the same run: a bare webrtc 0.21 data channel
//! between two in-process peers, and a plain TCP socket on loopback.
//! (Being written; returns no figures yet.)

use crate::report::Figure;
use crate::Ctx;

pub(crate) async fn run(_ctx: Ctx) -> anyhow::Result<Vec<Figure>> {
    Ok(Vec::new())
}
