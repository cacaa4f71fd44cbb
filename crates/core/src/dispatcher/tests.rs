use std::collections::HashMap;

use jobmesh_wire::{PeerInfo, Stats};
use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest, Just};
use proptest::strategy::Strategy as Gen;
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::strategy::LeastLoaded;

const SEC: Duration = Duration::from_secs(1);

fn peer(n: u128) -> PeerId {
    PeerId(Uuid::from_u128(n))
}

fn echo() -> Capability {
    Capability::new("echo").expect("valid")
}

fn worker(n: u128, slots: u32) -> PeerInfo {
    PeerInfo {
        id: peer(n),
        name: format!("w{n}"),
        capabilities: vec![echo()],
        stats: Stats {
            slots,
            ..Stats::default()
        },
    }
}

fn spec(n: u128) -> JobSpec {
    JobSpec {
        job_id: Uuid::from_u128(1000 + n),
        capability: echo(),
        input: json!({ "n": n }),
        timeout: 30 * SEC,
    }
}

struct Harness {
    d: Dispatcher,
    t0: Instant,
}

impl Harness {
    fn new(workers: &[PeerInfo]) -> Self {
        let t0 = Instant::now();
        let mut d = Dispatcher::new(
            peer(0),
            DispatcherConfig::default(),
            Box::new(LeastLoaded::new()),
        );
        d.handle_signal(
            t0,
            &ServerMsg::Welcome {
                pool: "p".into(),
                peers: workers.to_vec(),
                heartbeat_ms: 1000,
            },
        );
        Self { d, t0 }
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.d.poll_output()).collect()
    }

    /// The (worker, job) of every Submit sent.
    fn submits(&mut self) -> Vec<(PeerId, JobId)> {
        self.drain()
            .into_iter()
            .filter_map(|o| match o {
                Output::Send {
                    to,
                    msg: DcMsg::Submit { job_id, .. },
                } => Some((to, job_id)),
                _ => None,
            })
            .collect()
    }
}

fn finished(outs: &[Output]) -> Vec<&JobEnd> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Finished(e) => Some(e),
            _ => None,
        })
        .collect()
}

#[test]
fn no_capable_worker_fails_at_once_with_a_clear_error() {
    let mut h = Harness::new(&[]);
    h.d.submit(h.t0, spec(1)).expect("accepted");
    let outs = h.drain();
    let ends = finished(&outs);
    assert_eq!(ends.len(), 1);
    let err = ends[0].result.clone().expect_err("no worker");
    assert!(err.is_unplaced());
    assert!(
        err.to_string().contains("peer --capabilities echo"),
        "{err}"
    );
}

#[test]
fn a_job_is_offered_accepted_and_completed_once() {
    let mut h = Harness::new(&[worker(1, 2)]);
    h.d.submit(h.t0, spec(1)).expect("accepted");
    assert_eq!(h.submits(), vec![(peer(1), spec(1).job_id)]);
    let id = spec(1).job_id;
    h.d.handle_dc(h.t0, peer(1), &DcMsg::Accepted { job_id: id });
    let result = DcMsg::Result {
        job_id: id,
        outcome: Outcome::Ok {
            value: json!({"n": 1}),
        },
    };
    h.d.handle_dc(h.t0, peer(1), &result);
    let outs = h.drain();
    let ends = finished(&outs);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].result, Ok(json!({"n": 1})));
    assert_eq!(ends[0].worker, Some(peer(1)));
    // A duplicate result is stale, not a second outcome.
    h.d.handle_dc(h.t0, peer(1), &result);
    assert!(h.drain().is_empty());
    assert_eq!(h.d.stale_messages(), 1);
    assert!(h.d.is_empty());
}

#[test]
fn a_result_from_another_peer_is_ignored() {
    let mut h = Harness::new(&[worker(1, 1), worker(2, 1)]);
    h.d.submit(h.t0, spec(1)).expect("accepted");
    let [(w, id)] = h.submits()[..] else {
        panic!("one submit")
    };
    let other = if w == peer(1) { peer(2) } else { peer(1) };
    let fake = DcMsg::Result {
        job_id: id,
        outcome: Outcome::Ok { value: json!(0) },
    };
    h.d.handle_dc(h.t0, other, &fake);
    assert!(h.drain().is_empty());
    assert_eq!(h.d.stale_messages(), 1);
    assert_eq!(h.d.len(), 1);
}

#[test]
fn busy_rejection_moves_the_job_to_another_worker_then_waits() {
    let mut h = Harness::new(&[worker(1, 1), worker(2, 1)]);
    h.d.submit(h.t0, spec(1)).expect("accepted");
    let [(first, id)] = h.submits()[..] else {
        panic!("one submit")
    };
    let busy = DcMsg::Rejected {
        job_id: id,
        reason: RejectReason::Busy,
        message: "full".into(),
    };
    h.d.handle_dc(h.t0, first, &busy);
    let [(second, _)] = h.submits()[..] else {
        panic!("re-offered")
    };
    assert_ne!(first, second);
    h.d.handle_dc(h.t0, second, &busy);
    assert!(h.submits().is_empty(), "everyone refused: wait");
    let retry_at = h.d.poll_timeout().expect("a retry is scheduled");
    assert_eq!(retry_at, h.t0 + DispatcherConfig::default().busy_retry);
    h.d.handle_timeout(retry_at);
    assert_eq!(h.submits().len(), 1, "offered again after the wait");
}

#[test]
fn bad_input_rejection_is_final() {
    let mut h = Harness::new(&[worker(1, 1), worker(2, 1)]);
    h.d.submit(h.t0, spec(1)).expect("accepted");
    let [(w, id)] = h.submits()[..] else {
        panic!("one submit")
    };
    h.d.handle_dc(
        h.t0,
        w,
        &DcMsg::Rejected {
            job_id: id,
            reason: RejectReason::BadInput,
            message: "no".into(),
        },
    );
    let outs = h.drain();
    let ends = finished(&outs);
    assert!(matches!(
        ends[0].result,
        Err(JobError::Rejected {
            reason: RejectReason::BadInput,
            ..
        })
    ));
}

#[test]
fn a_lost_worker_hands_the_job_to_another_until_attempts_run_out() {
    let mut h = Harness::new(&[worker(1, 1), worker(2, 1), worker(3, 1), worker(4, 1)]);
    h.d.submit(h.t0, spec(1)).expect("accepted");
    let mut seen = Vec::new();
    for _ in 0..DispatcherConfig::default().max_attempts {
        let [(w, _)] = h.submits()[..] else {
            panic!("one submit")
        };
        assert!(!seen.contains(&w), "a lost worker is not re-used at once");
        seen.push(w);
        h.d.handle_link_closed(h.t0, w);
    }
    let outs = h.drain();
    let ends = finished(&outs);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].result, Err(JobError::Lost { attempts: 3 }));
}

#[test]
fn a_worker_leaving_the_pool_counts_as_lost() {
    let mut h = Harness::new(&[worker(1, 1), worker(2, 1)]);
    h.d.submit(h.t0, spec(1)).expect("accepted");
    let [(w, _)] = h.submits()[..] else {
        panic!("one submit")
    };
    h.d.handle_signal(h.t0, &ServerMsg::PeerLeft { peer_id: w });
    let [(w2, _)] = h.submits()[..] else {
        panic!("re-dispatched")
    };
    assert_ne!(w, w2);
}

#[test]
fn timeout_cancels_on_the_worker_and_ends_timed_out() {
    let mut h = Harness::new(&[worker(1, 1)]);
    h.d.submit(h.t0, spec(1)).expect("accepted");
    let [(w, id)] = h.submits()[..] else {
        panic!("one submit")
    };
    let deadline = h.d.poll_timeout().expect("deadline");
    assert_eq!(deadline, h.t0 + 30 * SEC);
    h.d.handle_timeout(deadline - Duration::from_millis(1));
    assert!(h.drain().is_empty(), "not yet");
    h.d.handle_timeout(deadline);
    let outs = h.drain();
    assert!(outs.contains(&Output::Send {
        to: w,
        msg: DcMsg::Cancel { job_id: id }
    }));
    let ends = finished(&outs);
    assert!(matches!(ends[0].result, Err(JobError::TimedOut { .. })));
}

#[test]
fn cancel_ends_the_job_and_tells_the_worker() {
    let mut h = Harness::new(&[worker(1, 1)]);
    h.d.submit(h.t0, spec(1)).expect("accepted");
    let [(w, id)] = h.submits()[..] else {
        panic!("one submit")
    };
    h.d.cancel(h.t0, id);
    let outs = h.drain();
    assert_eq!(outs.len(), 2);
    assert_eq!(
        outs[0],
        Output::Send {
            to: w,
            msg: DcMsg::Cancel { job_id: id }
        }
    );
    assert_eq!(finished(&outs)[0].result, Err(JobError::Cancelled));
}

#[test]
fn queue_limit_and_duplicates_are_refused_at_submit() {
    let t0 = Instant::now();
    let config = DispatcherConfig {
        queue_limit: 1,
        ..DispatcherConfig::default()
    };
    let mut d = Dispatcher::new(peer(0), config, Box::new(LeastLoaded::new()));
    d.handle_signal(
        t0,
        &ServerMsg::Welcome {
            pool: "p".into(),
            peers: vec![worker(1, 1)],
            heartbeat_ms: 1,
        },
    );
    d.submit(t0, spec(1)).expect("first fits");
    assert_eq!(d.submit(t0, spec(1)), Err(JobError::QueueFull { limit: 1 }));
}

#[test]
fn an_input_too_large_for_one_message_is_refused_at_submit() {
    let mut h = Harness::new(&[worker(1, 1)]);
    let mut big = spec(1);
    big.input = json!("x".repeat(jobmesh_wire::dc::MAX_DC_MESSAGE));
    let err = h.d.submit(h.t0, big).expect_err("too large");
    assert!(matches!(err, JobError::TooLarge { .. }), "{err:?}");
    assert!(h.drain().is_empty(), "nothing was sent");
    let mut fits = spec(2);
    fits.input = json!("x".repeat(jobmesh_wire::dc::MAX_DC_MESSAGE - 300));
    h.d.submit(h.t0, fits).expect("fits");
}

#[test]
fn jobs_wait_for_a_free_slot_and_spread_over_workers() {
    let mut h = Harness::new(&[worker(1, 2), worker(2, 2)]);
    for n in 0..20 {
        h.d.submit(h.t0, spec(n)).expect("accepted");
    }
    let mut per_worker: HashMap<PeerId, usize> = HashMap::new();
    let mut done = 0;
    // Four slots: four jobs out at a time; complete them as they arrive.
    while done < 20 {
        let sent = h.submits();
        assert!(!sent.is_empty(), "progress after {done} results");
        assert!(h.d.in_flight.values().sum::<u32>() <= 4);
        for (w, id) in sent {
            *per_worker.entry(w).or_default() += 1;
            h.d.handle_dc(
                h.t0,
                w,
                &DcMsg::Result {
                    job_id: id,
                    outcome: Outcome::Ok { value: json!(null) },
                },
            );
            done += 1;
        }
    }
    assert_eq!(per_worker.len(), 2, "both workers used: {per_worker:?}");
    assert_eq!(per_worker.values().sum::<usize>(), 20);
}

#[test]
fn never_dispatches_to_itself() {
    let mut me = worker(0, 4);
    me.id = peer(0);
    let mut h = Harness::new(&[me]);
    h.d.submit(h.t0, spec(1)).expect("accepted");
    let outs = h.drain();
    assert!(matches!(
        finished(&outs)[0].result,
        Err(JobError::NoCapableWorker { .. })
    ));
}

#[derive(Debug, Clone)]
enum Step {
    Submit,
    Accept(usize),
    Reject(usize, bool),
    Result(usize, bool),
    Close(u8),
    Leave(u8),
    Tick(u16),
    Cancel(usize),
}

fn step() -> impl Gen<Value = Step> {
    prop_oneof![
        Just(Step::Submit),
        any::<usize>().prop_map(Step::Accept),
        (any::<usize>(), any::<bool>()).prop_map(|(i, b)| Step::Reject(i, b)),
        (any::<usize>(), any::<bool>()).prop_map(|(i, b)| Step::Result(i, b)),
        (1u8..4).prop_map(Step::Close),
        (1u8..4).prop_map(Step::Leave),
        any::<u16>().prop_map(Step::Tick),
        any::<usize>().prop_map(Step::Cancel),
    ]
}

proptest! {
    /// Whatever happens, every submitted job ends exactly once, and nothing is
    /// left in flight once all jobs have ended.
    #[test]
    fn every_job_ends_exactly_once(steps in prop::collection::vec(step(), 1..120)) {
        let mut h = Harness::new(&[worker(1, 1), worker(2, 2), worker(3, 1)]);
        let mut now = h.t0;
        let mut submitted: Vec<JobId> = Vec::new();
        let mut sent: Vec<(PeerId, JobId)> = Vec::new();
        let mut ends: HashMap<JobId, usize> = HashMap::new();
        for s in steps {
            match s {
                Step::Submit => {
                    let mut sp = spec(submitted.len() as u128);
                    sp.timeout = 5 * SEC;
                    submitted.push(sp.job_id);
                    h.d.submit(now, sp).expect("room");
                }
                Step::Accept(i) if !sent.is_empty() => {
                    let (w, id) = sent[i % sent.len()];
                    h.d.handle_dc(now, w, &DcMsg::Accepted { job_id: id });
                }
                Step::Reject(i, busy) if !sent.is_empty() => {
                    let (w, id) = sent[i % sent.len()];
                    let reason = if busy { RejectReason::Busy } else { RejectReason::BadInput };
                    h.d.handle_dc(now, w, &DcMsg::Rejected { job_id: id, reason, message: String::new() });
                }
                Step::Result(i, ok) if !sent.is_empty() => {
                    let (w, id) = sent[i % sent.len()];
                    let outcome = if ok {
                        Outcome::Ok { value: json!(1) }
                    } else {
                        Outcome::Err { message: "x".into() }
                    };
                    h.d.handle_dc(now, w, &DcMsg::Result { job_id: id, outcome });
                }
                Step::Close(w) => h.d.handle_link_closed(now, peer(w.into())),
                Step::Leave(w) => {
                    h.d.handle_signal(now, &ServerMsg::PeerLeft { peer_id: peer(w.into()) });
                    h.d.handle_signal(now, &ServerMsg::PeerJoined { peer: worker(w.into(), 1) });
                }
                Step::Tick(ms) => {
                    now += Duration::from_millis(ms.into());
                    h.d.handle_timeout(now);
                }
                Step::Cancel(i) if !submitted.is_empty() => {
                    h.d.cancel(now, submitted[i % submitted.len()]);
                }
                _ => {}
            }
            for o in h.drain() {
                match o {
                    Output::Send { to, msg: DcMsg::Submit { job_id, .. } } => sent.push((to, job_id)),
                    Output::Finished(e) => *ends.entry(e.job_id).or_default() += 1,
                    Output::Send { .. } => {}
                }
            }
        }
        // Run the clock past every deadline: everything must end.
        now += 10 * SEC;
        h.d.handle_timeout(now);
        for o in h.drain() {
            if let Output::Finished(e) = o {
                *ends.entry(e.job_id).or_default() += 1;
            }
        }
        for id in &submitted {
            prop_assert_eq!(ends.get(id).copied(), Some(1), "job {} ended once", id);
        }
        prop_assert!(h.d.is_empty());
        prop_assert_eq!(h.d.queued(), 0);
        prop_assert!(h.d.in_flight.is_empty());
    }
}
