//! A compromised signal-server ([`MitmSignal`]) routes the handshake between
//! a submitter and a worker to an attacker it controls. Whether the attacker
//! relays the connection (its own DTLS certificates on both sides) or
//! answers in the worker's name, the link handshake fails before any job
//! message crosses, the attacker sees no payload, and the submitter's job
//! fails saying the worker's identity could not be verified.

use std::time::Duration;

use jobmesh_identity::{Identity, Nonce};
use jobmesh_peer::{JobError, Metrics};
use jobmesh_testkit::mitm::{Divert, MitmSignal};
use jobmesh_testkit::process::{daemon, expect_exit, run_peer, stdout_json, wait_capable};
use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, RawPeer, SignalGuard};
use jobmesh_wire::dc::DcMsg;
use serde_json::json;

const SECRET: &str = "the-payload-nobody-else-may-read";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_connection_is_refused_by_both_ends_before_any_job_byte() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let mitm = MitmSignal::start(server.url()).await;
    let worker = PeerGuard::start(mitm.url(), "mitm", "worker", &["echo"], 2);
    let sub = PeerGuard::start(mitm.url(), "mitm", "sub", &[], 0);
    // The attacker is a member in its own name, straight to the server.
    let mut attacker = RawPeer::join(server.url(), "mitm").await;
    sub.wait_capable("echo", 1).await;
    let (s, w) = (sub.handle.id(), worker.handle.id());
    mitm.divert(Divert {
        a: s,
        b: w,
        via: attacker.id,
    });

    let handle = sub.handle.clone();
    let job = tokio::spawn(async move {
        handle
            .run(
                cap("echo"),
                json!({ "secret": SECRET }),
                Duration::from_secs(15),
            )
            .await
    });
    // The submitter's dial to the worker reaches the attacker, which answers
    // it and dials the worker in the submitter's name, then passes every
    // message between the two.
    let (from, tag, offer) = attacker.next_offer().await;
    assert_eq!(from, s, "the compromised server routed the dial");
    let to_sub = attacker.answer(s, tag, offer).await;
    let to_worker = attacker.dial_unproven(w).await;
    let seen = attacker.pipe(&to_sub, &to_worker).await;

    let report = within("the job's end", job)
        .await
        .expect("the task")
        .expect("the job was accepted");
    match &report.result {
        Err(e @ JobError::Unverified { worker: named, .. }) => {
            assert_eq!(*named, w);
            let text = e.to_string();
            assert!(
                text.contains("could not verify the identity of worker"),
                "{text}"
            );
        }
        other => panic!("expected the worker's identity to fail, got {other:?}"),
    }
    // Only the handshake and the refusals crossed the attacker.
    for bytes in &seen {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(SECRET),
            "the attacker read the payload: {text}"
        );
        let msg = DcMsg::decode(bytes).expect("valid messages");
        assert!(
            matches!(
                msg,
                DcMsg::LinkHello { .. } | DcMsg::LinkProof { .. } | DcMsg::Error { .. }
            ),
            "a job message crossed an unverified link: {msg:?}"
        );
    }
    assert!(Metrics::get(&sub.handle.metrics().links_refused) >= 1);
    assert!(Metrics::get(&worker.handle.metrics().links_refused) >= 1);
    assert_eq!(
        Metrics::get(&worker.handle.metrics().submits_received),
        0,
        "the worker ran nothing"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_submit_says_the_worker_could_not_be_verified_when_the_server_answers_for_it() {
    init_tracing();
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut server = SignalGuard::start().await;
    let mitm = MitmSignal::start(server.url()).await;
    let id = |name: &str| {
        let data = tmp.path().join(format!("{name}.data"));
        let out = run_peer(&["id", "--data-dir", data.to_str().expect("utf-8"), "--json"]);
        expect_exit(&out, 0);
        stdout_json(&out)["peer_id"]
            .as_str()
            .expect("peer_id")
            .parse()
            .map(jobmesh_wire::PeerId)
            .expect("a peer id")
    };
    let (w, s) = (id("w"), id("s"));
    let _worker = daemon(mitm.url(), "mitm", "w", "echo", tmp.path(), &[]);
    let _sub = daemon(mitm.url(), "mitm", "s", "", tmp.path(), &[]);
    let sock = tmp.path().join("s.sock");
    wait_capable(&sock, "echo", 1).await;
    let mut attacker = RawPeer::join(server.url(), "mitm").await;
    mitm.divert(Divert {
        a: s,
        b: w,
        via: attacker.id,
    });

    let sock_s = sock.to_str().expect("utf-8").to_owned();
    let submit = tokio::task::spawn_blocking(move || {
        run_peer(&[
            "submit",
            "echo",
            "--input",
            &json!({ "secret": SECRET }).to_string(),
            "--control",
            &sock_s,
        ])
    });
    // The attacker answers in the worker's name and proves its own key.
    let (from, tag, offer) = attacker.next_offer().await;
    assert_eq!(from, s);
    let link = attacker.answer(s, tag, offer).await;
    let hello = DcMsg::LinkHello {
        key: Identity::generate().public(),
        nonce: Nonce::random(),
        credential: None,
    };
    link.try_send(hello.encode()).expect("queued");
    // The submitter's hello, then its refusal; never a job message.
    assert!(matches!(attacker.recv_msg().await, DcMsg::LinkHello { .. }));
    let refusal = attacker.recv_msg().await;
    assert!(
        matches!(&refusal, DcMsg::Error { message, .. } if message.contains("proved the key of peer")),
        "{refusal:?}"
    );

    let out = within("peer submit", submit)
        .await
        .expect("the command ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("could not verify the identity of worker"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_handshake_replayed_on_a_new_connection_is_refused() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let mitm = MitmSignal::start(server.url()).await;
    let worker = PeerGuard::start(mitm.url(), "replay", "worker", &["echo"], 2);
    // A member's handshake with the worker, recorded.
    let member = Identity::generate();
    let mut honest = RawPeer::join_as(mitm.url(), "replay", member.clone()).await;
    let w = honest.member("worker").await;
    let link = honest.dial_unproven(w).await;
    let nonce = Nonce::random();
    let hello = DcMsg::LinkHello {
        key: member.public(),
        nonce,
        credential: None,
    };
    link.try_send(hello.encode()).expect("queued");
    let DcMsg::LinkHello { nonce: theirs, .. } = honest.recv_msg().await else {
        panic!("expected the worker's hello");
    };
    let fingerprints = link.fingerprints();
    let sig = member.sign(
        jobmesh_identity::Purpose::ChannelBinding,
        &jobmesh_wire::link::binding_message(
            &fingerprints.local,
            &fingerprints.remote,
            &nonce,
            &theirs,
            &w,
        ),
    );
    let proof = DcMsg::LinkProof { sig };
    link.try_send(proof.encode()).expect("queued");
    assert!(matches!(honest.recv_msg().await, DcMsg::LinkProof { .. }));
    assert_eq!(Metrics::get(&worker.handle.metrics().links_refused), 0);

    // Someone without the member's key, dialling in its name (the server
    // lies about who dials), replays the recorded hello and proof.
    let mut thief = RawPeer::join(server.url(), "replay").await;
    mitm.divert(Divert {
        a: member.peer_id(),
        b: w,
        via: thief.id,
    });
    let stolen = thief.dial_unproven(w).await;
    stolen.try_send(hello.encode()).expect("queued");
    stolen.try_send(proof.encode()).expect("queued");
    // The worker's hello and proof (made for this connection, worthless on
    // any other), then its refusal.
    assert!(matches!(thief.recv_msg().await, DcMsg::LinkHello { .. }));
    assert!(matches!(thief.recv_msg().await, DcMsg::LinkProof { .. }));
    let refusal = thief.recv_msg().await;
    assert!(
        matches!(&refusal, DcMsg::Error { message, .. } if message.contains("does not match this connection")),
        "{refusal:?}"
    );
    assert_eq!(Metrics::get(&worker.handle.metrics().links_refused), 1);
    server.stop().await;
}
