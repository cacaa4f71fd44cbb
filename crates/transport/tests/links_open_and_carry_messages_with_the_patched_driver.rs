//! The patched webrtc (vendor/, docs/performance.md "webrtc setup patch")
//! sends the packets a peer connection queues while handling events and
//! reads at once instead of at the driver's next timer. This checks the
//! patched handshake end to end at the transport level — dial, answer, the
//! DTLS/SCTP/DCEP exchange, then a message in order — with the slowest ICE
//! check tick webrtc allows to matter (3 s), so nothing relies on a tick.
//! How much sooner links open is measured, not asserted: the bench's
//! `webrtc channel setup` and `startup` figures.

use std::time::Duration;

use jobmesh_transport::rtc::{self, LinkEvent, RtcConfig};
use jobmesh_wire::signal::Handshake;
use jobmesh_wire::PeerId;
use tokio::sync::{mpsc, oneshot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_opens_and_delivers_a_message() {
    let config = RtcConfig {
        udp_addrs: vec!["127.0.0.1:0".into()],
        ice_check_interval: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(10),
        ..RtcConfig::default()
    };
    let (a, b) = (PeerId::random(), PeerId::random());
    let (offer_tx, mut offer_rx) = mpsc::channel::<String>(1);
    let (answer_tx, answer_rx) = oneshot::channel::<String>();
    let (events_a, _rx_a) = mpsc::channel::<LinkEvent>(16);
    let (events_b, mut rx_b) = mpsc::channel::<LinkEvent>(16);

    let dial = {
        let config = config.clone();
        tokio::spawn(async move {
            let relay = move |h: Handshake| match h {
                Handshake::Offer { sdp, .. } => offer_tx.try_send(sdp).is_ok(),
                _ => false,
            };
            rtc::dial(&config, b, 1, relay, answer_rx, events_a).await
        })
    };
    let offer = offer_rx.recv().await.expect("an offer");
    let answer_tx = std::sync::Mutex::new(Some(answer_tx));
    let relay = move |h: Handshake| match h {
        Handshake::Answer { sdp, .. } => answer_tx
            .lock()
            .ok()
            .and_then(|mut tx| tx.take())
            .is_some_and(|tx| tx.send(sdp).is_ok()),
        _ => false,
    };
    let answered = rtc::answer(&config, a, 1, offer, relay, events_b)
        .await
        .expect("the answering side opens within the deadline");
    let dialled = dial
        .await
        .expect("dial task")
        .expect("the dialling side opens within the deadline");

    dialled.try_send(b"{\"hello\":1}".to_vec()).expect("queued");
    match tokio::time::timeout(Duration::from_secs(10), rx_b.recv()).await {
        Ok(Some(LinkEvent::Message { data, .. })) => assert_eq!(&data[..], b"{\"hello\":1}"),
        other => panic!("no message over the new link: {other:?}"),
    }
    dialled.close_flushed().await;
    answered.close_flushed().await;
}
