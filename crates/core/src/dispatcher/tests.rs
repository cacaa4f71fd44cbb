use std::collections::HashMap;

use jobmesh_wire::dc::Progress;
use jobmesh_wire::{PeerInfo, Stats};
use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as Gen;
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::job::JobOptions;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn peer(n: u128) -> PeerId {
    PeerId(Uuid::from_u128(n))
}

/// A view page of the signal-server: `reset` + `synced` for a whole pool.
fn page(reset: bool, left: Vec<PeerId>, peers: Vec<PeerInfo>) -> ServerMsg {
    ServerMsg::View {
        reset,
        left,
        peers,
        synced: true,
    }
}

/// A fresh view's first page, not yet complete: `peers` and more to come.
fn first_page(peers: Vec<PeerInfo>) -> ServerMsg {
    ServerMsg::View {
        reset: true,
        left: Vec::new(),
        peers,
        synced: false,
    }
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
        options: JobOptions::default(),
    }
}

fn with(n: u128, f: impl FnOnce(&mut JobOptions)) -> JobSpec {
    let mut s = spec(n);
    f(&mut s.options);
    s
}

struct Harness {
    d: Dispatcher,
    t0: Instant,
}

impl Harness {
    fn new(workers: &[PeerInfo]) -> Self {
        Self::with_config(workers, DispatcherConfig::default())
    }

    fn with_config(workers: &[PeerInfo], config: DispatcherConfig) -> Self {
        let t0 = Instant::now();
        let mut d = Dispatcher::new(peer(0), config, None);
        let welcome = page(true, Vec::new(), workers.to_vec());
        d.handle_input(t0, Input::Signal(&welcome)).expect("signal");
        Self { d, t0 }
    }

    fn submit(&mut self, spec: JobSpec) {
        self.d
            .handle_input(self.t0, Input::Submit(spec))
            .expect("accepted");
    }

    fn reply(&mut self, at: Instant, from: PeerId, msg: DcMsg) {
        self.d
            .handle_input(at, Input::Dc { from, msg: &msg })
            .expect("no error");
    }

    /// The worker accepts attempt `a` of job `id` and returns a result.
    fn complete(&mut self, w: PeerId, id: JobId, a: u32) {
        let accepted = DcMsg::Accepted {
            job_id: id,
            attempt: a,
        };
        self.reply(self.t0, w, accepted);
        self.reply(self.t0, w, ok(id, a, json!(null)));
    }

    fn tick(&mut self, at: Instant) {
        self.d.handle_input(at, Input::Timeout).expect("no error");
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.d.poll_output()).collect()
    }

    /// (worker, job, attempt) of every submit sent.
    fn submits(&mut self) -> Vec<(PeerId, JobId, u32)> {
        submits(&self.drain())
    }
}

fn submits(outs: &[Output]) -> Vec<(PeerId, JobId, u32)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                msg: DcMsg::Submit {
                    job_id, attempt, ..
                },
            } => Some((*to, *job_id, *attempt)),
            _ => None,
        })
        .collect()
}

fn finished(outs: &[Output]) -> Vec<&JobEnd> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Finished(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn events(outs: &[Output]) -> Vec<&'static str> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.kind.name()),
            _ => None,
        })
        .collect()
}

/// Whether `outs` are only `received` replies to results.
fn only_receipts(outs: &[Output]) -> bool {
    outs.iter().all(|o| {
        matches!(
            o,
            Output::Send {
                msg: DcMsg::Received { .. },
                ..
            }
        )
    })
}

fn ok(job_id: JobId, attempt: u32, value: serde_json::Value) -> DcMsg {
    DcMsg::Result {
        job_id,
        attempt,
        outcome: Outcome::Ok { value },
        load: None,
    }
}

#[test]
fn a_job_goes_queued_dispatched_started_progress_finished_and_ends_once() {
    let mut h = Harness::new(&[worker(1, 2)]);
    h.submit(spec(1));
    let outs = h.drain();
    assert_eq!(events(&outs), vec!["queued", "dispatched"]);
    let [(w, id, 1)] = submits(&outs)[..] else {
        panic!("one submit, attempt 1")
    };
    h.reply(
        h.t0,
        w,
        DcMsg::Accepted {
            job_id: id,
            attempt: 1,
        },
    );
    let progress = Progress {
        percent: Some(50),
        stage: Some("half".into()),
        message: None,
    };
    h.reply(
        h.t0,
        w,
        DcMsg::Progress {
            job_id: id,
            attempt: 1,
            progress: progress.clone(),
        },
    );
    assert!(
        matches!(h.d.state(&id), Some(JobState::Running { progress: Some(p), .. }) if *p == progress)
    );
    h.reply(h.t0 + MS, w, ok(id, 1, json!({"n": 1})));
    let outs = h.drain();
    assert_eq!(events(&outs), vec!["started", "progress", "finished"]);
    let ends = finished(&outs);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].result, Ok(json!({"n": 1})));
    assert_eq!(ends[0].attempts.len(), 1);
    assert_eq!(ends[0].attempts[0].outcome, Some(AttemptOutcome::Completed));
    assert_eq!(ends[0].attempts[0].started_at, Some(h.t0));
    // A duplicate result is stale, not a second outcome (only its receipt
    // goes back).
    h.reply(h.t0, w, ok(id, 1, json!(0)));
    assert!(only_receipts(&h.drain()));
    assert_eq!(h.d.stale_messages(), 1);
    assert!(h.d.is_empty());
}

#[test]
fn no_capable_worker_fails_at_once_with_a_clear_error() {
    let mut h = Harness::new(&[]);
    h.submit(spec(1));
    let outs = h.drain();
    let err = finished(&outs)[0].result.clone().expect_err("no worker");
    assert!(err.is_unplaced());
    assert!(
        err.to_string().contains("peer --capabilities echo"),
        "{err}"
    );
}

#[test]
fn a_job_outside_a_filtered_view_says_so_and_one_inside_says_no_worker() {
    let ocr = Capability::new("ocr").expect("a capability");
    let config = |view: Vec<Capability>| DispatcherConfig {
        view: Some(view),
        ..DispatcherConfig::default()
    };
    let mut h = Harness::with_config(&[], config(vec![ocr.clone()]));
    h.submit(spec(1));
    let err = finished(&h.drain())[0]
        .result
        .clone()
        .expect_err("not in the view");
    assert!(err.is_unplaced());
    assert_eq!(
        err,
        JobError::OutsideView {
            capability: echo(),
            view: "ocr".into()
        }
    );
    assert!(err.to_string().contains("--view all"), "{err}");
    // A worker-only peer (`--view none`) says none.
    let mut h = Harness::with_config(&[], config(Vec::new()));
    h.submit(spec(1));
    let err = finished(&h.drain())[0]
        .result
        .clone()
        .expect_err("a blind view");
    assert!(err.to_string().contains("workers of none"), "{err}");
    // Its own capability in the view: nobody runs it, the usual error.
    let mut h = Harness::with_config(&[], config(vec![echo()]));
    h.submit(spec(1));
    let err = finished(&h.drain())[0]
        .result
        .clone()
        .expect_err("no worker");
    assert!(matches!(err, JobError::NoCapableWorker { .. }), "{err}");
}

#[test]
fn replies_from_another_peer_or_an_old_attempt_are_ignored() {
    let mut h = Harness::new(&[worker(1, 1), worker(2, 1)]);
    h.submit(spec(1));
    let [(w, id, 1)] = h.submits()[..] else {
        panic!("one submit")
    };
    let other = if w == peer(1) { peer(2) } else { peer(1) };
    h.reply(h.t0, other, ok(id, 1, json!(0)));
    h.reply(h.t0, w, ok(id, 7, json!(0)));
    h.reply(
        h.t0,
        w,
        DcMsg::Accepted {
            job_id: id,
            attempt: 2,
        },
    );
    assert!(only_receipts(&h.drain()));
    assert_eq!(h.d.stale_messages(), 3);
    // A result before `accepted` breaks the claim protocol: ignored too.
    h.reply(h.t0, w, ok(id, 1, json!(0)));
    assert!(finished(&h.drain()).is_empty());
    assert_eq!(h.d.len(), 1);
}

#[test]
fn busy_rejection_moves_the_job_to_another_worker_without_spending_a_retry() {
    let mut h = Harness::new(&[worker(1, 1), worker(2, 1)]);
    h.submit(with(1, |o| o.max_retries = 0));
    let [(first, id, 1)] = h.submits()[..] else {
        panic!("one submit")
    };
    let busy = |attempt| DcMsg::Rejected {
        job_id: id,
        attempt,
        reason: RejectReason::Busy,
        message: "full".into(),
    };
    h.reply(h.t0, first, busy(1));
    let [(second, _, 2)] = h.submits()[..] else {
        panic!("attempt 2")
    };
    assert_ne!(first, second);
    h.reply(h.t0, second, busy(2));
    assert!(h.submits().is_empty(), "everyone refused: wait");
    let retry_at = h.d.poll_timeout().expect("a retry is scheduled");
    assert_eq!(retry_at, h.t0 + DispatcherConfig::default().busy_retry);
    h.tick(retry_at);
    assert_eq!(
        h.submits().len(),
        1,
        "offered again after the wait, though max_retries is 0"
    );
}

#[test]
fn a_load_report_on_a_result_beats_older_broadcast_stats() {
    let mut h = Harness::new(&[worker(1, 1)]);
    h.submit(spec(1));
    let [(w, id, a)] = h.submits()[..] else {
        panic!("one submit")
    };
    h.reply(
        h.t0,
        w,
        DcMsg::Accepted {
            job_id: id,
            attempt: a,
        },
    );
    let load = jobmesh_wire::dc::Load {
        running: 0,
        slots: 1,
        seq: 2,
    };
    let done = DcMsg::Result {
        job_id: id,
        attempt: a,
        outcome: Outcome::Ok { value: json!(1) },
        load: Some(load),
    };
    h.reply(h.t0, w, done);
    // The broadcast the worker sent when the job started arrives late.
    let mut stale = worker(1, 1);
    stale.stats.running = 1;
    stale.stats.seq = 1;
    let late = page(false, Vec::new(), vec![stale]);
    h.d.handle_input(h.t0, Input::Signal(&late)).expect("input");
    h.drain();
    h.submit(spec(2));
    assert_eq!(h.submits().len(), 1, "the worker is known to be free");
}

#[test]
fn bad_input_rejection_is_final() {
    let mut h = Harness::new(&[worker(1, 1), worker(2, 1)]);
    h.submit(spec(1));
    let [(w, id, a)] = h.submits()[..] else {
        panic!("one submit")
    };
    let bad = DcMsg::Rejected {
        job_id: id,
        attempt: a,
        reason: RejectReason::BadInput,
        message: "no".into(),
    };
    h.reply(h.t0, w, bad);
    let outs = h.drain();
    assert!(matches!(
        finished(&outs)[0].result,
        Err(JobError::Rejected {
            reason: RejectReason::BadInput,
            ..
        })
    ));
}

#[test]
fn a_lost_worker_is_retried_elsewhere_with_a_new_attempt_until_retries_run_out() {
    let mut h = Harness::new(&[worker(1, 1), worker(2, 1), worker(3, 1), worker(4, 1)]);
    h.submit(spec(1)); // max_retries 2: three attempts
    let mut seen = Vec::new();
    let mut now = h.t0;
    for n in 1..=3 {
        let sent = h.submits();
        let [(w, id, attempt)] = sent[..] else {
            panic!("attempt {n}: {sent:?}")
        };
        assert_eq!(attempt, n);
        assert!(!seen.contains(&w), "a lost worker is not re-used at once");
        seen.push(w);
        h.reply(
            now,
            w,
            DcMsg::Accepted {
                job_id: id,
                attempt,
            },
        );
        h.d.handle_input(now, Input::LinkClosed(w)).expect("input");
        let outs = h.drain();
        if n < 3 {
            assert_eq!(events(&outs), vec!["started", "retrying"]);
            now = h.d.poll_timeout().expect("backoff timer");
            h.tick(now);
        } else {
            let end = finished(&outs)[0];
            assert!(matches!(&end.result, Err(JobError::Lost { attempts }) if attempts.len() == 3));
            assert_eq!(end.attempts.len(), 3);
            assert!(end
                .attempts
                .iter()
                .all(|a| a.outcome == Some(AttemptOutcome::Lost)));
        }
    }
}

/// Submits job `n` and has its worker accept it (over an open link when
/// `linked`); returns (worker, job, attempt).
fn accepted(h: &mut Harness, n: u128, linked: bool) -> (PeerId, JobId, u32) {
    h.submit(spec(n));
    let [(w, id, attempt)] = h.submits()[..] else {
        panic!("one submit")
    };
    if linked {
        h.d.handle_input(h.t0, Input::LinkOpened(w)).expect("input");
    }
    h.reply(
        h.t0,
        w,
        DcMsg::Accepted {
            job_id: id,
            attempt,
        },
    );
    h.drain();
    (w, id, attempt)
}

#[test]
fn a_worker_missing_from_the_view_keeps_its_attempt_while_its_link_is_open() {
    // A restarted signal-server's first view lacks the peers that have not
    // rejoined yet: the job's worker runs it on an open link, and must not
    // lose it.
    let mut h = Harness::new(&[worker(1, 1), worker(2, 1)]);
    let (w, id, attempt) = accepted(&mut h, 1, true);
    let other = if w == peer(1) {
        worker(2, 1)
    } else {
        worker(1, 1)
    };
    let without_w = page(true, Vec::new(), vec![other]);
    h.d.handle_input(h.t0, Input::Signal(&without_w))
        .expect("signal");
    assert!(h.submits().is_empty(), "the attempt stays where it runs");
    // Its result is the job's.
    h.reply(h.t0, w, ok(id, attempt, json!("done")));
    let outs = h.drain();
    let [end] = finished(&outs)[..] else {
        panic!("finished once: {outs:?}")
    };
    assert!(end.result.is_ok());

    // Without a link, leaving the view loses the attempt at once.
    let mut h = Harness::new(&[worker(1, 1), worker(2, 1)]);
    let (w, _, _) = accepted(&mut h, 2, false);
    h.d.handle_input(h.t0, Input::Signal(&page(false, vec![w], Vec::new())))
        .expect("signal");
    assert_eq!(events(&h.drain()), vec!["retrying"]);
}

#[test]
fn a_worker_missing_from_the_view_with_an_open_link_is_lost_when_its_lease_ends() {
    let mut h = Harness::new(&[worker(1, 1), worker(2, 1)]);
    let (w, _, _) = accepted(&mut h, 1, true);
    h.d.handle_input(h.t0, Input::Signal(&page(false, vec![w], Vec::new())))
        .expect("signal");
    assert!(h.drain().is_empty());
    // Silent (it crashed, and its link has not noticed yet): the lease ends it.
    let lease_end = h.d.poll_timeout().expect("a lease");
    assert!(lease_end <= h.t0 + DispatcherConfig::default().lease);
    h.tick(lease_end);
    assert!(events(&h.drain()).contains(&"retrying"));
}

#[test]
fn without_retry_on_disconnect_a_lost_job_ends_lost() {
    let mut h = Harness::new(&[worker(1, 1), worker(2, 1)]);
    h.submit(with(1, |o| o.retry_on_disconnect = false));
    let [(w, _, _)] = h.submits()[..] else {
        panic!("one submit")
    };
    h.d.handle_input(h.t0, Input::Signal(&page(false, vec![w], Vec::new())))
        .expect("input");
    let outs = h.drain();
    assert!(matches!(
        finished(&outs)[0].result,
        Err(JobError::Lost { .. })
    ));
}

#[test]
fn timeout_cancels_the_attempt_on_the_worker_and_retries_if_allowed() {
    let mut h = Harness::new(&[worker(1, 1)]);
    h.submit(with(1, |o| {
        o.timeout = 5 * SEC;
        o.max_retries = 1;
    }));
    let [(w, id, 1)] = h.submits()[..] else {
        panic!("one submit")
    };
    let deadline = h.d.poll_timeout().expect("deadline");
    assert_eq!(deadline, h.t0 + 5 * SEC);
    h.tick(deadline - MS);
    assert!(h.drain().is_empty(), "not yet");
    h.tick(deadline);
    let outs = h.drain();
    assert!(outs.contains(&Output::Send {
        to: w,
        msg: DcMsg::Cancel {
            job_id: id,
            attempt: 1
        }
    }));
    assert_eq!(events(&outs), vec!["retrying"]);
    let retry = h.d.poll_timeout().expect("retry timer");
    h.tick(retry);
    let [(_, _, 2)] = h.submits()[..] else {
        panic!("attempt 2")
    };
    h.tick(retry + 5 * SEC);
    let outs = h.drain();
    let end = finished(&outs)[0];
    assert!(matches!(&end.result, Err(JobError::TimedOut { attempts, .. }) if attempts.len() == 2));
    assert_eq!(
        end.result.as_ref().err().map(JobError::state_name),
        Some("timed_out")
    );
}

#[test]
fn a_reply_arriving_after_the_deadline_loses_to_the_timeout() {
    let mut h = Harness::new(&[worker(1, 1)]);
    h.submit(with(1, |o| {
        o.timeout = SEC;
        o.max_retries = 0;
    }));
    let [(w, id, a)] = h.submits()[..] else {
        panic!("one submit")
    };
    h.reply(
        h.t0,
        w,
        DcMsg::Accepted {
            job_id: id,
            attempt: a,
        },
    );
    // The timer was not ticked, but the result comes in after the deadline.
    h.reply(h.t0 + 2 * SEC, w, ok(id, a, json!("late")));
    let outs = h.drain();
    assert!(matches!(
        finished(&outs)[0].result,
        Err(JobError::TimedOut { .. })
    ));
    assert_eq!(
        h.d.stale_messages(),
        1,
        "the result was for an ended attempt"
    );
}

#[test]
fn a_queued_job_nobody_takes_times_out_at_its_deadline() {
    let mut h = Harness::new(&[worker(1, 1)]);
    h.submit(with(1, |o| o.timeout = 10 * SEC));
    h.submit(with(2, |o| o.timeout = 2 * SEC));
    assert_eq!(h.submits().len(), 1, "one slot");
    h.tick(h.t0 + 2 * SEC);
    let outs = h.drain();
    let ends = finished(&outs);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].job_id, spec(2).job_id);
    assert!(matches!(ends[0].result, Err(JobError::TimedOut { .. })));
}

#[test]
fn retryable_handler_errors_are_retried_with_bounded_exponential_backoff() {
    let config = DispatcherConfig {
        backoff_base: 100 * MS,
        backoff_cap: 300 * MS,
        seed: 42,
        ..DispatcherConfig::default()
    };
    let mut h = Harness::with_config(&[worker(1, 1)], config);
    h.submit(with(1, |o| o.max_retries = 4));
    let mut now = h.t0;
    let mut afters = Vec::new();
    let mut submits = h.submits();
    for n in 1..=5u32 {
        let [(w, id, attempt)] = submits[..] else {
            panic!("attempt {n}")
        };
        assert_eq!(attempt, n);
        h.reply(
            now,
            w,
            DcMsg::Accepted {
                job_id: id,
                attempt,
            },
        );
        let err = DcMsg::Result {
            job_id: id,
            attempt,
            outcome: Outcome::Err {
                message: format!("e{n}"),
                retryable: true,
            },
            load: None,
        };
        h.reply(now, w, err);
        let outs = h.drain();
        if n == 5 {
            let end = finished(&outs)[0];
            let Err(JobError::Failed { message, attempts }) = &end.result else {
                panic!("failed")
            };
            assert_eq!(message, "e5");
            assert_eq!(attempts.len(), 5, "every attempt's error is carried");
            assert!(attempts[0].contains("e1"));
            break;
        }
        let after = outs
            .iter()
            .find_map(|o| match o {
                Output::Event(JobEvent {
                    kind: EventKind::Retrying { after, .. },
                    ..
                }) => Some(*after),
                _ => None,
            })
            .expect("a retry");
        afters.push(after);
        // Timers until the retry goes out (the receipts' one may come first).
        submits = loop {
            now = h.d.poll_timeout().expect("timer");
            assert_eq!(now, h.t0.max(now), "monotonic");
            h.tick(now);
            let sent = h.submits();
            if !sent.is_empty() {
                break sent;
            }
        };
    }
    // Full jitter within min(cap, base·2^retry).
    for (retry, after) in afters.iter().enumerate() {
        let ceiling = (100 * MS * (1 << retry)).min(300 * MS);
        assert!(*after <= ceiling, "retry {retry}: {after:?} > {ceiling:?}");
    }
}

#[test]
fn non_retryable_handler_errors_fail_at_once() {
    let mut h = Harness::new(&[worker(1, 1)]);
    h.submit(spec(1));
    let [(w, id, 1)] = h.submits()[..] else {
        panic!("one submit")
    };
    h.reply(
        h.t0,
        w,
        DcMsg::Accepted {
            job_id: id,
            attempt: 1,
        },
    );
    let err = DcMsg::Result {
        job_id: id,
        attempt: 1,
        outcome: Outcome::Err {
            message: "bad".into(),
            retryable: false,
        },
        load: None,
    };
    h.reply(h.t0, w, err);
    let outs = h.drain();
    assert!(
        matches!(&finished(&outs)[0].result, Err(JobError::Failed { message, .. }) if message == "bad")
    );
}

#[test]
fn cancel_works_in_every_live_state() {
    for state in ["queued", "dispatched", "running"] {
        let mut h = Harness::new(&[worker(1, 1)]);
        h.submit(spec(1)); // takes the only slot
        let [(w, first, 1)] = h.submits()[..] else {
            panic!("one submit")
        };
        h.submit(spec(2)); // queued behind it
        let id = match state {
            "queued" => spec(2).job_id,
            "dispatched" => first,
            _ => {
                h.reply(
                    h.t0,
                    w,
                    DcMsg::Accepted {
                        job_id: first,
                        attempt: 1,
                    },
                );
                first
            }
        };
        assert_eq!(h.d.state(&id).map(JobState::name), Some(state));
        h.drain();
        h.d.handle_input(h.t0, Input::Cancel(id)).expect("input");
        let outs = h.drain();
        let told = outs.iter().any(|o| {
            matches!(
                o,
                Output::Send {
                    msg: DcMsg::Cancel { .. },
                    ..
                }
            )
        });
        assert_eq!(
            told,
            state != "queued",
            "{state}: the worker is told iff it has the job"
        );
        let ends = finished(&outs);
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0].result, Err(JobError::Cancelled));
        assert_eq!(ends[0].job_id, id);
    }
}

#[test]
fn queued_jobs_run_by_priority_then_in_order() {
    let mut h = Harness::new(&[worker(1, 1)]);
    h.submit(spec(0)); // takes the slot
    let [(w, first, _)] = h.submits()[..] else {
        panic!("one submit")
    };
    h.submit(with(1, |o| o.priority = 0));
    h.submit(with(2, |o| o.priority = 5));
    h.submit(with(3, |o| o.priority = 0));
    h.submit(with(4, |o| o.priority = 5));
    h.submit(with(5, |o| o.priority = -1));
    assert!(h.submits().is_empty());
    let mut order = Vec::new();
    let mut running = (w, first, 1);
    for _ in 0..5 {
        h.complete(running.0, running.1, running.2);
        let [next] = h.submits()[..] else {
            panic!("the next job")
        };
        order.push(next.1);
        running = next;
    }
    let want: Vec<JobId> = [2, 4, 1, 3, 5].iter().map(|n| spec(*n).job_id).collect();
    assert_eq!(order, want);
}

#[test]
fn each_strategy_is_used_as_asked() {
    let workers = [worker(1, 4), worker(2, 4), worker(3, 4)];
    let mut h = Harness::new(&workers);
    let mut picks = Vec::new();
    for n in 0..6 {
        h.submit(with(n, |o| o.strategy = Some(StrategyKind::RoundRobin)));
        let [(w, id, a)] = h.submits()[..] else {
            panic!("submit")
        };
        picks.push(w);
        h.complete(w, id, a);
        h.drain();
    }
    assert_eq!(
        picks,
        vec![peer(1), peer(2), peer(3), peer(1), peer(2), peer(3)]
    );
    let mut homes = Vec::new();
    for n in 10..14 {
        h.submit(with(n, |o| {
            o.strategy = Some(StrategyKind::Affinity);
            o.affinity = Some("same-key".into());
        }));
        let [(w, id, a)] = h.submits()[..] else {
            panic!("submit")
        };
        homes.push(w);
        h.complete(w, id, a);
        h.drain();
    }
    assert!(
        homes.windows(2).all(|p| p[0] == p[1]),
        "affinity sticks: {homes:?}"
    );
    // A custom strategy that is not installed is refused at submit.
    let r = h.d.handle_input(
        h.t0,
        Input::Submit(with(20, |o| o.strategy = Some(StrategyKind::Custom))),
    );
    assert_eq!(r, Err(JobError::NoCustomStrategy));
}

#[test]
fn a_custom_strategy_decides() {
    struct Last;
    impl Strategy for Last {
        fn pick(
            &mut self,
            _: &PickRequest<'_>,
            c: &[Candidate],
            _: &mut dyn rand::RngCore,
        ) -> Option<PeerId> {
            c.iter().rev().find(|c| c.has_room()).map(|c| c.id)
        }
    }
    let t0 = Instant::now();
    let config = DispatcherConfig {
        default_strategy: StrategyKind::Custom,
        ..DispatcherConfig::default()
    };
    let mut d = Dispatcher::new(peer(0), config, Some(Box::new(Last)));
    let welcome = page(
        true,
        Vec::new(),
        vec![worker(1, 1), worker(2, 1), worker(3, 1)],
    );
    d.handle_input(t0, Input::Signal(&welcome)).expect("signal");
    d.handle_input(t0, Input::Submit(spec(1))).expect("submit");
    let outs: Vec<Output> = std::iter::from_fn(|| d.poll_output()).collect();
    assert_eq!(submits(&outs)[0].0, peer(3));
}

#[test]
fn self_dispatch_runs_locally_when_this_peer_is_the_best_candidate() {
    let mut h = Harness::new(&[worker(1, 1)]);
    let mut me = worker(0, 2);
    me.id = peer(0);
    h.d.handle_input(h.t0, Input::LocalWorker(Some(me.clone())))
        .expect("input");
    h.submit(spec(1));
    h.submit(spec(2));
    h.submit(spec(3));
    let to: Vec<PeerId> = h.submits().iter().map(|s| s.0).collect();
    assert_eq!(
        to.iter().filter(|w| **w == peer(0)).count(),
        2,
        "two local slots: {to:?}"
    );
    assert_eq!(to.iter().filter(|w| **w == peer(1)).count(), 1);
    // Turned off, this peer is never a candidate.
    let config = DispatcherConfig {
        self_dispatch: false,
        ..DispatcherConfig::default()
    };
    let mut h = Harness::with_config(&[], config);
    h.d.handle_input(h.t0, Input::LocalWorker(Some(me)))
        .expect("input");
    h.submit(spec(1));
    assert!(matches!(
        finished(&h.drain())[0].result,
        Err(JobError::NoCapableWorker { .. })
    ));
}

#[test]
fn queue_limit_duplicates_and_oversized_inputs_are_refused_at_submit() {
    let config = DispatcherConfig {
        queue_limit: 2,
        ..DispatcherConfig::default()
    };
    let mut h = Harness::with_config(&[worker(1, 1)], config);
    h.submit(spec(1));
    let r = h.d.handle_input(h.t0, Input::Submit(spec(1)));
    assert_eq!(r, Err(JobError::Duplicate(spec(1).job_id)));
    let mut big = spec(2);
    big.input = json!("x".repeat(MAX_DC_MESSAGE));
    let r = h.d.handle_input(h.t0, Input::Submit(big));
    assert!(matches!(r, Err(JobError::TooLarge { .. })));
    h.submit(spec(3));
    let r = h.d.handle_input(h.t0, Input::Submit(spec(4)));
    assert_eq!(r, Err(JobError::QueueFull { limit: 2 }));
}

#[test]
fn jobs_wait_for_free_slots_and_spread_over_workers() {
    let mut h = Harness::new(&[worker(1, 2), worker(2, 2)]);
    for n in 0..20 {
        h.submit(spec(n));
    }
    let mut per_worker: HashMap<PeerId, usize> = HashMap::new();
    let mut done = 0;
    while done < 20 {
        let sent = h.submits();
        assert!(!sent.is_empty(), "progress after {done} results");
        assert!(h.d.in_flight().values().all(|n| *n <= 2));
        for (w, id, a) in sent {
            *per_worker.entry(w).or_default() += 1;
            h.complete(w, id, a);
            done += 1;
        }
    }
    assert_eq!(per_worker.len(), 2, "both workers used: {per_worker:?}");
}

// ---- the reference-model property test -------------------------------------

/// What the model knows about a job: whether it has ended, and the attempt
/// the core last offered (read from its `Submit` outputs).
#[derive(Debug, Default, Clone)]
struct ModelJob {
    ended: bool,
    current: Option<(PeerId, u32)>,
    accepted: bool,
    old: Vec<(PeerId, u32)>,
}

#[derive(Debug, Clone)]
enum Step {
    Submit {
        priority: i8,
        retries: u8,
        timeout_ms: u16,
    },
    Accept(usize),
    Busy(usize),
    Complete(usize),
    HandlerError(usize, bool),
    LateResult(usize),
    Progress(usize),
    Close(u8),
    Leave(u8),
    Join(u8),
    Tick(u16),
    Cancel(usize),
}

fn step() -> impl Gen<Value = Step> {
    prop_oneof![
        (any::<i8>(), 0u8..3, 1u16..5000).prop_map(|(priority, retries, timeout_ms)| {
            Step::Submit {
                priority,
                retries,
                timeout_ms,
            }
        }),
        any::<usize>().prop_map(Step::Accept),
        any::<usize>().prop_map(Step::Busy),
        any::<usize>().prop_map(Step::Complete),
        (any::<usize>(), any::<bool>()).prop_map(|(i, r)| Step::HandlerError(i, r)),
        any::<usize>().prop_map(Step::LateResult),
        any::<usize>().prop_map(Step::Progress),
        (1u8..4).prop_map(Step::Close),
        (1u8..4).prop_map(Step::Leave),
        (1u8..4).prop_map(Step::Join),
        any::<u16>().prop_map(Step::Tick),
        any::<usize>().prop_map(Step::Cancel),
    ]
}

const SLOTS: [u32; 4] = [0, 1, 2, 1];

/// The model's view of an attempt that ended: it becomes an old one.
fn retire(m: &mut ModelJob) {
    if let Some(prev) = m.current.take() {
        m.old.push(prev);
    }
    m.accepted = false;
}

/// Every current attempt at `w` ended (its link closed or it left).
fn retire_at(model: &mut HashMap<JobId, ModelJob>, w: PeerId) {
    for m in model.values_mut() {
        if m.current.is_some_and(|(at, _)| at == w) {
            retire(m);
        }
    }
}

proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

    /// The core and a simple model take the same steps and must agree:
    /// every job ends exactly once; a reply for the current attempt has the
    /// effect the model predicts; replies for old attempts change nothing;
    /// no worker ever has more of this peer's attempts than its slots; every
    /// live job has a pending timer.
    #[test]
    fn the_dispatcher_agrees_with_the_reference_model(steps in prop::collection::vec(step(), 1..150)) {
        let workers: Vec<PeerInfo> = (1..=3).map(|n| worker(n, SLOTS[n as usize])).collect();
        let mut h = Harness::new(&workers);
        let mut now = h.t0;
        let mut model: HashMap<JobId, ModelJob> = HashMap::new();
        let mut order: Vec<JobId> = Vec::new();
        let mut ends: HashMap<JobId, usize> = HashMap::new();
        let pick = |order: &Vec<JobId>, model: &HashMap<JobId, ModelJob>, i: usize, accepted: bool| {
            let live: Vec<JobId> = order
                .iter()
                .copied()
                .filter(|id| model[id].current.is_some() && !model[id].ended && model[id].accepted == accepted)
                .collect();
            (!live.is_empty()).then(|| live[i % live.len()])
        };
        for s in steps {
            let mut expect_end: Option<(JobId, &'static str)> = None;
            // What deadlines due by `now` did before this step's input.
            let mut due = Vec::new();
            match s {
                Step::Submit { priority, retries, timeout_ms } => {
                    let mut sp = spec(order.len() as u128);
                    sp.options.priority = priority.into();
                    sp.options.max_retries = retries.into();
                    sp.options.timeout = Duration::from_millis(timeout_ms.into());
                    order.push(sp.job_id);
                    model.insert(sp.job_id, ModelJob::default());
                    h.d.handle_input(now, Input::Submit(sp)).expect("room");
                }
                Step::Accept(i) => {
                    if let Some(id) = pick(&order, &model, i, false) {
                        let (w, a) = model[&id].current.expect("current");
                        h.reply(now, w, DcMsg::Accepted { job_id: id, attempt: a });
                        model.get_mut(&id).expect("known").accepted = true;
                    }
                }
                Step::Busy(i) => {
                    if let Some(id) = pick(&order, &model, i, false) {
                        let (w, a) = model[&id].current.expect("current");
                        let m = DcMsg::Rejected { job_id: id, attempt: a, reason: RejectReason::Busy, message: String::new() };
                        h.reply(now, w, m);
                        retire(model.get_mut(&id).expect("known"));
                    }
                }
                Step::Complete(i) => {
                    if let Some(id) = pick(&order, &model, i, true) {
                        let (w, a) = model[&id].current.expect("current");
                        h.reply(now, w, ok(id, a, json!(a)));
                        expect_end = Some((id, "completed"));
                    }
                }
                Step::HandlerError(i, retryable) => {
                    if let Some(id) = pick(&order, &model, i, true) {
                        let (w, a) = model[&id].current.expect("current");
                        let m = DcMsg::Result { job_id: id, attempt: a, outcome: Outcome::Err { message: "x".into(), retryable }, load: None };
                        h.reply(now, w, m);
                        if !retryable {
                            expect_end = Some((id, "failed"));
                        }
                    }
                }
                Step::LateResult(i) => {
                    let olds: Vec<(JobId, PeerId, u32)> = order
                        .iter()
                        .flat_map(|id| model[id].old.iter().map(move |(w, a)| (*id, *w, *a)))
                        .collect();
                    if !olds.is_empty() {
                        let (id, w, a) = olds[i % olds.len()];
                        // A deadline due by now fires before anything that
                        // arrives now (a busy reply may have parked a job
                        // until now): that is not the late result's doing.
                        if h.d.poll_timeout().is_some_and(|t| t <= now) {
                            h.tick(now);
                            due = h.drain();
                        }
                        let before = h.d.stale_messages();
                        h.reply(now, w, ok(id, a, json!("late")));
                        let outs = h.drain();
                        prop_assert!(only_receipts(&outs), "a late result changed something: {outs:?}");
                        prop_assert_eq!(h.d.stale_messages(), before + 1);
                    }
                }
                Step::Progress(i) => {
                    if let Some(id) = pick(&order, &model, i, true) {
                        let (w, a) = model[&id].current.expect("current");
                        let m = DcMsg::Progress { job_id: id, attempt: a, progress: Progress::default() };
                        h.reply(now, w, m);
                    }
                }
                Step::Close(w) => {
                    h.d.handle_input(now, Input::LinkClosed(peer(w.into()))).expect("input");
                    retire_at(&mut model, peer(w.into()));
                }
                Step::Leave(w) => {
                    let m = page(false, vec![peer(w.into())], Vec::new());
                    h.d.handle_input(now, Input::Signal(&m)).expect("input");
                    retire_at(&mut model, peer(w.into()));
                }
                Step::Join(w) => {
                    let m = page(false, Vec::new(), vec![worker(w.into(), SLOTS[usize::from(w)])]);
                    h.d.handle_input(now, Input::Signal(&m)).expect("input");
                }
                Step::Tick(ms) => {
                    now += Duration::from_millis(ms.into());
                    h.tick(now);
                }
                Step::Cancel(i) => {
                    if !order.is_empty() {
                        let id = order[i % order.len()];
                        h.d.handle_input(now, Input::Cancel(id)).expect("input");
                        if !model[&id].ended {
                            expect_end = Some((id, "cancelled"));
                        }
                    }
                }
            }
            let mut outs = due;
            outs.extend(h.drain());
            for o in &outs {
                match o {
                    Output::Send { to, msg: DcMsg::Submit { job_id, attempt, .. } } => {
                        let m = model.get_mut(job_id).expect("known job");
                        prop_assert!(!m.ended, "a submit for an ended job");
                        if let Some(prev) = m.current.take() {
                            m.old.push(prev);
                        }
                        m.current = Some((*to, *attempt));
                        m.accepted = false;
                    }
                    Output::Event(JobEvent { job_id, kind: EventKind::Retrying { .. }, .. }) => {
                        retire(model.get_mut(job_id).expect("known job"));
                    }
                    Output::Finished(e) => {
                        *ends.entry(e.job_id).or_default() += 1;
                        let m = model.get_mut(&e.job_id).expect("known job");
                        prop_assert!(!m.ended, "a second outcome");
                        m.ended = true;
                        if let Some(prev) = m.current.take() {
                            m.old.push(prev);
                        }
                        let state = match &e.result {
                            Ok(_) => "completed",
                            Err(err) => err.state_name(),
                        };
                        if let Some((id, want)) = expect_end {
                            if id == e.job_id {
                                prop_assert_eq!(state, want);
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let Some((id, want)) = expect_end {
                prop_assert!(model[&id].ended, "the model expected {} to end {}", id, want);
            }
            for (w, n) in h.d.in_flight() {
                let slots = SLOTS[w.0.as_u128() as usize];
                prop_assert!(*n <= slots, "{} attempts at a worker with {} slots", n, slots);
            }
            if !h.d.is_empty() {
                prop_assert!(h.d.poll_timeout().is_some(), "a live job without a timer");
            }
            // The indexes agree with the jobs they index.
            prop_assert_eq!(h.d.timers.len(), h.d.jobs.len());
            for (id, j) in &h.d.jobs {
                prop_assert!(h.d.timers.contains(&(j.timer, *id)), "a stale timer entry");
                // A queued job whose wait is over sleeps until its deadline.
                let parked = matches!(j.state, JobState::Queued)
                    && j.not_before <= now
                    && j.timer == j.deadline;
                prop_assert!(j.timer == j.next_timer() || parked, "a timer out of date");
            }
            prop_assert_eq!(h.d.queued_caps.values().sum::<usize>(), h.d.queue.len());
        }
        // Run the clock far past every deadline, rejoining workers: all must end.
        for w in 1..=3u128 {
            let m = page(false, vec![peer(w)], Vec::new());
            h.d.handle_input(now, Input::Signal(&m)).expect("input");
        }
        for _ in 0..10 {
            now += 60 * SEC;
            h.tick(now);
        }
        for o in h.drain() {
            if let Output::Finished(e) = o {
                *ends.entry(e.job_id).or_default() += 1;
            }
        }
        for id in &order {
            prop_assert_eq!(ends.get(id).copied(), Some(1), "job {} ended exactly once", id);
        }
        prop_assert!(h.d.is_empty());
        prop_assert_eq!(h.d.queued(), 0);
        prop_assert!(h.d.in_flight().is_empty());
    }
}

#[test]
fn a_resumed_job_continues_its_attempt_numbers_and_ignores_the_old_attempt() {
    let w = worker(1, 2);
    let mut h = Harness::new(std::slice::from_ref(&w));
    let s = spec(7);
    let id = s.job_id;
    h.d.handle_input(
        h.t0,
        Input::Resume {
            spec: s,
            attempts_before: 3,
            held_by: None,
        },
    )
    .expect("resumed");
    assert_eq!(h.submits(), vec![(w.id, id, 4)], "attempts go on after 3");

    // The earlier run's attempt 3 reports from the same worker: stale.
    let accepted = DcMsg::Accepted {
        job_id: id,
        attempt: 4,
    };
    h.reply(h.t0, w.id, accepted);
    h.reply(
        h.t0,
        w.id,
        DcMsg::Result {
            job_id: id,
            attempt: 3,
            outcome: Outcome::Err {
                message: "cancelled".into(),
                retryable: false,
            },
            load: None,
        },
    );
    assert!(
        finished(&h.drain()).is_empty(),
        "the old attempt's result ends nothing"
    );
    h.reply(h.t0, w.id, ok(id, 4, json!("done")));
    let outs = h.drain();
    let ends = finished(&outs);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].result, Ok(json!("done")));
    assert_eq!(
        ends[0]
            .attempts
            .iter()
            .map(|a| a.number)
            .collect::<Vec<_>>(),
        vec![4]
    );
}

fn heartbeat(id: JobId, attempt: u32) -> DcMsg {
    DcMsg::Progress {
        job_id: id,
        attempt,
        progress: Progress::default(),
    }
}

#[test]
fn a_worker_silent_past_its_lease_loses_the_attempt_is_told_to_cancel_and_its_late_result_is_stale()
{
    let (w1, w2) = (worker(1, 1), worker(2, 1));
    let mut h = Harness::new(&[w1.clone(), w2.clone()]);
    let s = with(9, |o| {
        o.timeout = 60 * SEC;
        o.strategy = Some(StrategyKind::RoundRobin);
    });
    let id = s.job_id;
    h.submit(s);
    let first = h.submits();
    assert_eq!(first.len(), 1);
    let (old, _, _) = first[0];
    let lease = DispatcherConfig::default().lease;
    h.reply(
        h.t0,
        old,
        DcMsg::Accepted {
            job_id: id,
            attempt: 1,
        },
    );
    // Heartbeats keep it: no event, no loss, for as long as they come.
    for k in 1..=3 {
        let at = h.t0 + k * (lease - SEC);
        h.reply(at, old, heartbeat(id, 1));
        h.tick(at);
    }
    let outs = h.drain();
    assert!(
        !events(&outs).contains(&"progress"),
        "a heartbeat is not progress: {:?}",
        events(&outs)
    );
    assert!(finished(&outs).is_empty());
    assert_eq!(h.d.leases_expired(), 0);

    // Then silence past the lease: lost, the worker told to cancel, retried.
    let last = h.t0 + 3 * (lease - SEC);
    h.tick(last + lease);
    let outs = h.drain();
    assert_eq!(h.d.leases_expired(), 1);
    assert!(outs.iter().any(|o| matches!(o, Output::Send { to, msg: DcMsg::Cancel { job_id, attempt: 1 } } if *to == old && *job_id == id)), "{outs:?}");
    assert!(events(&outs).contains(&"retrying"), "{:?}", events(&outs));
    h.tick(last + lease + 20 * SEC);
    let again = h.submits();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].2, 2, "a new attempt");
    let new = again[0].0;

    // The frozen worker wakes up and reports attempt 1: stale, ignored.
    let stale = h.d.stale_messages();
    h.reply(last + lease + 21 * SEC, old, ok(id, 1, json!("late")));
    assert!(finished(&h.drain()).is_empty());
    assert_eq!(h.d.stale_messages(), stale + 1);
    // The new attempt's result is the one delivered.
    h.reply(
        last + lease + 21 * SEC,
        new,
        DcMsg::Accepted {
            job_id: id,
            attempt: 2,
        },
    );
    h.reply(last + lease + 21 * SEC, new, ok(id, 2, json!("fresh")));
    let outs = h.drain();
    let ends = finished(&outs);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].result, Ok(json!("fresh")));
}

#[test]
fn result_blob_chunks_renew_the_lease() {
    let w1 = worker(1, 1);
    let mut h = Harness::new(std::slice::from_ref(&w1));
    let s = with(10, |o| o.timeout = 60 * SEC);
    let id = s.job_id;
    h.submit(s);
    h.drain();
    let lease = DispatcherConfig::default().lease;
    h.reply(
        h.t0,
        w1.id,
        DcMsg::Accepted {
            job_id: id,
            attempt: 1,
        },
    );
    let mut at = h.t0;
    for _ in 0..4 {
        at += lease - SEC;
        h.d.handle_input(
            at,
            Input::Alive {
                from: w1.id,
                job_id: id,
                attempt: 1,
            },
        )
        .expect("alive");
        h.tick(at);
    }
    assert_eq!(h.d.leases_expired(), 0);
    // Word about another attempt still shows the worker alive: on a slow
    // link this attempt's own messages may wait behind it.
    h.d.handle_input(
        at + SEC,
        Input::Alive {
            from: w1.id,
            job_id: id,
            attempt: 7,
        },
    )
    .expect("alive");
    h.tick(at + lease);
    assert_eq!(h.d.leases_expired(), 0);
    // Then silence past the lease loses it.
    h.tick(at + SEC + lease);
    assert_eq!(h.d.leases_expired(), 1);
}

#[test]
fn any_word_from_a_worker_holds_the_leases_of_all_its_attempts() {
    let w1 = worker(1, 4);
    let mut h = Harness::new(std::slice::from_ref(&w1));
    let lease = DispatcherConfig::default().lease;
    let ids: Vec<JobId> = (0..2)
        .map(|n| {
            let s = with(n, |o| o.timeout = 60 * SEC);
            let id = s.job_id;
            h.submit(s);
            id
        })
        .collect();
    h.drain();
    // Only the first job's messages get through; the second's wait behind
    // them (a slow link), yet its lease holds while the worker speaks.
    let mut at = h.t0;
    for _ in 0..5 {
        at += lease - SEC;
        h.reply(at, w1.id, heartbeat(ids[0], 1));
        h.tick(at);
    }
    assert_eq!(h.d.leases_expired(), 0);
    assert!(h.d.state(&ids[1]).is_some_and(|s| s.attempt().is_some()));
    // Silent: both are lost.
    h.tick(at + lease);
    assert_eq!(h.d.leases_expired(), 2);
}

#[test]
fn before_the_pool_view_is_complete_a_job_waits_instead_of_failing_no_worker() {
    let t0 = Instant::now();
    let mut d = Dispatcher::new(peer(0), DispatcherConfig::default(), None);
    let ids = [spec(1), spec(2)].map(|s| {
        let id = s.job_id;
        d.handle_input(t0, Input::Submit(s)).expect("queued");
        id
    });
    let outs: Vec<Output> = std::iter::from_fn(|| d.poll_output()).collect();
    assert!(
        finished(&outs).is_empty(),
        "no verdict before the view is synced"
    );
    // A first page, not yet complete: still waiting.
    let partial = first_page(Vec::new());
    d.handle_input(t0, Input::Signal(&partial)).expect("page");
    assert!(finished(&std::iter::from_fn(|| d.poll_output()).collect::<Vec<_>>()).is_empty());
    // The view completes with one echo worker: both jobs are offered.
    let w = worker(1, 4);
    d.handle_input(t0, Input::Signal(&page(false, Vec::new(), vec![w.clone()])))
        .expect("synced");
    let outs: Vec<Output> = std::iter::from_fn(|| d.poll_output()).collect();
    let sent: Vec<JobId> = submits(&outs).into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(sent.len(), 2);
    assert!(ids.iter().all(|id| sent.contains(id)));
}

#[test]
fn once_the_view_is_complete_a_capability_nobody_runs_fails_at_once() {
    let t0 = Instant::now();
    let mut d = Dispatcher::new(peer(0), DispatcherConfig::default(), None);
    let s = spec(3);
    d.handle_input(t0, Input::Submit(s)).expect("queued");
    d.handle_input(t0, Input::Signal(&page(true, Vec::new(), Vec::new())))
        .expect("synced, empty");
    let outs: Vec<Output> = std::iter::from_fn(|| d.poll_output()).collect();
    let ends = finished(&outs);
    assert_eq!(ends.len(), 1);
    assert!(matches!(
        ends[0].result,
        Err(JobError::NoCapableWorker { .. })
    ));
}

fn cancels(outs: &[Output]) -> Vec<(PeerId, JobId, u32)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                msg: DcMsg::Cancel { job_id, attempt },
            } => Some((*to, *job_id, *attempt)),
            _ => None,
        })
        .collect()
}

fn held(id: JobId, attempt: u32) -> DcMsg {
    DcMsg::Held {
        job_id: id,
        attempt,
    }
}

#[test]
fn a_worker_holding_a_job_gets_it_back_and_the_attempt_elsewhere_is_superseded() {
    let mut h = Harness::new(&[worker(1, 2), worker(2, 2)]);
    let id = spec(1).job_id;
    h.submit(spec(1));
    let [(first, _, 1)] = h.submits()[..] else {
        panic!("one submit")
    };
    // The link to the first worker closes: the job is retried on the other.
    h.d.handle_input(h.t0, Input::LinkClosed(first))
        .expect("no error");
    h.tick(h.t0 + 20 * SEC);
    let [(second, _, 2)] = h.submits()[..] else {
        panic!("a retry")
    };
    assert_ne!(first, second);
    h.reply(
        h.t0 + 20 * SEC,
        second,
        DcMsg::Accepted {
            job_id: id,
            attempt: 2,
        },
    );
    h.drain();
    // The first worker is back and says it holds attempt 1: attempt 2 is
    // cancelled on the second worker, and attempt 3 goes to the first.
    h.reply(h.t0 + 21 * SEC, first, held(id, 1));
    let outs = h.drain();
    assert_eq!(cancels(&outs), vec![(second, id, 2)]);
    assert_eq!(submits(&outs), vec![(first, id, 3)]);
    // The second worker's late result is stale; the held one completes it.
    let stale = h.d.stale_messages();
    h.reply(h.t0 + 21 * SEC, second, ok(id, 2, json!("second")));
    assert_eq!(h.d.stale_messages(), stale + 1);
    h.reply(
        h.t0 + 21 * SEC,
        first,
        DcMsg::Accepted {
            job_id: id,
            attempt: 3,
        },
    );
    h.reply(h.t0 + 21 * SEC, first, ok(id, 3, json!("held")));
    let outs = h.drain();
    let ends = finished(&outs);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].result, Ok(json!("held")));
    let log: Vec<String> = ends[0]
        .attempts
        .iter()
        .filter_map(|a| a.outcome.as_ref().map(ToString::to_string))
        .collect();
    assert!(log[1].starts_with("superseded by worker"), "{log:?}");
    // Once the job has ended, a worker still offering it gets a receipt.
    let at = h.t0 + 22 * SEC;
    h.tick(at);
    h.drain();
    h.reply(at, second, held(id, 2));
    h.tick(at + Duration::from_millis(RECEIPT_DELAY_MS));
    let receipts: Vec<Output> = h
        .drain()
        .into_iter()
        .filter(|o| {
            matches!(
                o,
                Output::Send {
                    msg: DcMsg::Received { .. },
                    ..
                }
            )
        })
        .collect();
    assert_eq!(
        receipts,
        vec![Output::Send {
            to: second,
            msg: DcMsg::Received {
                receipts: vec![Receipt {
                    job_id: id,
                    attempt: 2
                }]
            }
        }]
    );
}

#[test]
fn a_held_word_for_a_job_already_attached_there_or_queued_is_handled_once() {
    let mut h = Harness::new(&[worker(1, 1)]);
    let id = spec(1).job_id;
    h.submit(spec(1));
    let [(w, _, 1)] = h.submits()[..] else {
        panic!("one submit")
    };
    // The worker's word crosses a submit to the same worker: nothing new.
    h.reply(h.t0, w, held(id, 1));
    assert!(h.drain().is_empty());
    // Queued (its link closed, backing off): the held word places it at once
    // on that worker.
    h.d.handle_input(h.t0, Input::LinkClosed(w))
        .expect("no error");
    h.drain();
    h.reply(h.t0 + MS, w, held(id, 1));
    assert_eq!(h.submits(), vec![(w, id, 2)]);
    h.complete(w, id, 2);
    assert_eq!(finished(&h.drain()).len(), 1);
}

#[test]
fn a_resumed_job_goes_first_to_the_worker_that_held_it_even_when_full() {
    // Worker 2 looks full (its one slot runs the job we lost track of).
    let mut busy = worker(2, 1);
    busy.stats.running = 1;
    let mut h = Harness::new(&[worker(1, 4), busy.clone()]);
    let resume = |h: &mut Harness, n: u128, held_by: Option<PeerId>| {
        h.d.handle_input(
            h.t0,
            Input::Resume {
                spec: spec(n),
                attempts_before: 17,
                held_by,
            },
        )
        .expect("resumed");
    };
    resume(&mut h, 1, Some(busy.id));
    assert_eq!(h.submits(), vec![(busy.id, spec(1).job_id, 18)]);
    // A worker gone from the pool is no preference: the strategy decides.
    resume(&mut h, 2, Some(peer(9)));
    assert_eq!(h.submits(), vec![(peer(1), spec(2).job_id, 18)]);
}

#[test]
fn before_the_view_is_complete_a_resumed_job_keeps_its_preference() {
    let mut h = Harness::new(&[]);
    // A fresh, incomplete view.
    let partial = first_page(Vec::new());
    h.d.handle_input(h.t0, Input::Signal(&partial))
        .expect("signal");
    h.d.handle_input(
        h.t0,
        Input::Resume {
            spec: spec(1),
            attempts_before: 17,
            held_by: Some(peer(2)),
        },
    )
    .expect("resumed");
    assert!(h.submits().is_empty());
    let full = page(false, Vec::new(), vec![worker(1, 4), worker(2, 1)]);
    h.d.handle_input(h.t0, Input::Signal(&full))
        .expect("signal");
    assert_eq!(h.submits(), vec![(peer(2), spec(1).job_id, 18)]);
}

#[test]
fn a_resumed_job_does_not_run_on_this_peer_before_the_view_can_show_its_holder() {
    // A restarted daemon that works too: its own worker is known at once,
    // the pool only once the view is complete.
    let mut h = Harness::new(&[]);
    let partial = first_page(Vec::new());
    h.d.handle_input(h.t0, Input::Signal(&partial))
        .expect("signal");
    h.d.handle_input(h.t0, Input::LocalWorker(Some(worker(0, 2))))
        .expect("input");
    for (n, held_by) in [(1, peer(2)), (2, peer(9))] {
        h.d.handle_input(
            h.t0,
            Input::Resume {
                spec: spec(n),
                attempts_before: 17,
                held_by: Some(held_by),
            },
        )
        .expect("resumed");
    }
    assert_eq!(
        h.submits(),
        Vec::new(),
        "placed before its holder could be seen"
    );
    // A new job is not held back: this peer runs it at once.
    h.submit(spec(3));
    assert_eq!(h.submits(), vec![(peer(0), spec(3).job_id, 1)]);
    // The view completes: the first goes back to its holder, the second's
    // holder is gone, so the strategy places it (here: this peer).
    let full = page(false, Vec::new(), vec![worker(2, 1)]);
    h.d.handle_input(h.t0, Input::Signal(&full))
        .expect("signal");
    assert_eq!(
        h.submits(),
        vec![(peer(2), spec(1).job_id, 18), (peer(0), spec(2).job_id, 18)]
    );
}

#[test]
fn receipts_of_results_go_to_each_worker_gathered_within_the_receipt_delay() {
    let mut h = Harness::new(&[worker(1, 2000), worker(2, 2000)]);
    let delay = Duration::from_millis(RECEIPT_DELAY_MS);
    for n in 0..4 {
        h.submit(spec(n));
    }
    let sent = h.submits();
    for (w, id, a) in &sent {
        h.complete(*w, *id, *a);
    }
    // A stale result gets its receipt too.
    let (w0, id0, _) = sent[0];
    h.reply(h.t0, w0, ok(id0, 9, json!(null)));
    let outs = h.drain();
    assert!(
        !outs.iter().any(|o| matches!(
            o,
            Output::Send {
                msg: DcMsg::Received { .. },
                ..
            }
        )),
        "held back"
    );
    assert_eq!(h.d.poll_timeout(), Some(h.t0 + delay));
    h.tick(h.t0 + delay);
    let mut got: Vec<(PeerId, usize)> = h
        .drain()
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                msg: DcMsg::Received { receipts },
            } => Some((*to, receipts.len())),
            _ => None,
        })
        .collect();
    got.sort();
    let per_worker = |w: PeerId| sent.iter().filter(|s| s.0 == w).count();
    let mut want = vec![
        (peer(1), per_worker(peer(1)) + usize::from(w0 == peer(1))),
        (peer(2), per_worker(peer(2)) + usize::from(w0 == peer(2))),
    ];
    want.retain(|(_, n)| *n > 0);
    assert_eq!(got, want);
    assert_eq!(h.d.poll_timeout(), None);

    // A full message goes at once; a closed link drops what waits for it.
    for n in 10..10 + 2 * MAX_RECEIPTS as u128 + 2 {
        h.submit(with(n, |o| o.strategy = Some(StrategyKind::RoundRobin)));
    }
    // Each worker is sent its window of jobs at a time; each answer lets
    // another go, all at the same instant.
    let mut full = Vec::new();
    loop {
        let outs = h.drain();
        full.extend(outs.iter().filter_map(|o| match o {
            Output::Send {
                msg: DcMsg::Received { receipts },
                ..
            } => Some(receipts.len()),
            _ => None,
        }));
        let sent = submits(&outs);
        if sent.is_empty() {
            break;
        }
        for (w, id, a) in &sent {
            h.complete(*w, *id, *a);
        }
    }
    assert!(
        full.iter().all(|n| *n == MAX_RECEIPTS) && !full.is_empty(),
        "{full:?}"
    );
    h.d.handle_input(h.t0, Input::LinkClosed(peer(1)))
        .expect("no error");
    h.d.handle_input(h.t0, Input::LinkClosed(peer(2)))
        .expect("no error");
    h.tick(h.t0 + delay);
    assert!(
        !h.drain().iter().any(|o| matches!(
            o,
            Output::Send {
                msg: DcMsg::Received { .. },
                ..
            }
        )),
        "no receipt dials a closed link"
    );
}

#[test]
fn a_job_every_worker_refuses_busy_still_times_out_at_its_wait_deadline() {
    let w1 = worker(1, 1);
    let mut h = Harness::new(std::slice::from_ref(&w1));
    let timeout = 3 * SEC;
    let s = with(1, |o| o.timeout = timeout);
    let id = s.job_id;
    h.submit(s);
    // The worker says busy to every offer (a slot it cannot free).
    let mut now = h.t0;
    let mut offers = 0;
    while now < h.t0 + 10 * SEC {
        for (w, job, attempt) in h.submits() {
            offers += 1;
            let busy = DcMsg::Rejected {
                job_id: job,
                attempt,
                reason: RejectReason::Busy,
                message: "all 1 slots are busy".into(),
            };
            h.reply(now, w, busy);
        }
        if h.d.state(&id).is_none() {
            break;
        }
        now = h.d.poll_timeout().expect("a timer while the job is held");
        h.tick(now);
    }
    assert!(offers > 1, "offered again after each refusal");
    assert!(h.d.state(&id).is_none(), "it ended");
    assert!(
        now <= h.t0 + timeout,
        "at its wait deadline, not later: {:?}",
        now - h.t0
    );
}

#[test]
fn a_job_that_cannot_be_placed_yet_asks_to_be_woken_only_at_its_deadline() {
    // Every worker busy, or a view still filling: the job waits, and the
    // next input (stats, a result, the view) tries it again. A timer left in
    // the past would make the caller spin.
    let mut busy = worker(1, 1);
    busy.stats.running = 1;
    for workers in [vec![busy], Vec::new()] {
        let mut h = Harness::new(&[]);
        let partial = first_page(workers);
        h.d.handle_input(h.t0, Input::Signal(&partial))
            .expect("signal");
        h.submit(spec(1));
        h.tick(h.t0);
        assert!(h.submits().is_empty());
        assert_eq!(
            h.d.poll_timeout(),
            Some(h.t0 + JobOptions::default().timeout),
            "woken before its deadline"
        );
    }
}

#[test]
fn a_worker_claiming_many_free_slots_gets_no_more_than_it_has_shown_it_handles() {
    // Worker 1 claims 10,000 free slots, accepts every job and never
    // answers; worker 2 has 4 slots and answers at once.
    let mut h = Harness::new(&[worker(1, 10_000), worker(2, 4)]);
    let jobs = 200;
    for n in 0..jobs {
        h.submit(with(n, |o| {
            o.timeout = 5 * SEC;
            o.max_retries = 5;
        }));
    }
    let (liar, honest) = (peer(1), peer(2));
    let (mut to_liar, mut most_at_liar, mut done) = (0, 0, 0);
    let mut now = h.t0;
    while done < jobs && now < h.t0 + 3600 * SEC {
        let outs = h.drain();
        for end in finished(&outs) {
            assert!(end.result.is_ok(), "{:?}", end.result);
            done += 1;
        }
        let sent = submits(&outs);
        for &(w, job_id, attempt) in &sent {
            h.reply(now, w, DcMsg::Accepted { job_id, attempt });
            if w == liar {
                to_liar += 1;
            } else {
                h.reply(now, w, ok(job_id, attempt, json!(null)));
            }
        }
        let at_liar = h.d.in_flight().get(&liar).copied().unwrap_or(0);
        most_at_liar = most_at_liar.max(at_liar);
        if sent.is_empty() {
            now += SEC;
            h.tick(now);
        }
    }
    assert_eq!(done, jobs, "every job completes on the honest worker");
    // At most the initial window (16) at once, of 200 jobs; and as its
    // window halves with each attempt it lets time out, few more in all.
    assert!(most_at_liar <= 16, "{most_at_liar} at once");
    assert!(to_liar <= 32, "{to_liar} attempts went to it");
    assert!(h.d.in_flight().get(&honest).is_none());
}

#[test]
fn a_draining_worker_gets_no_more_jobs_from_its_first_refusal_or_its_stats() {
    let mut h = Harness::new(&[worker(1, 4), worker(2, 4)]);
    for n in 0..2 {
        h.submit(with(n, |o| o.strategy = Some(StrategyKind::RoundRobin)));
    }
    let sent = h.submits();
    let (w, job_id, attempt) = *sent
        .iter()
        .find(|s| s.0 == peer(1))
        .expect("round robin used worker 1");
    h.reply(
        h.t0,
        w,
        DcMsg::Rejected {
            job_id,
            attempt,
            reason: RejectReason::Draining,
            message: "worker is shutting down".into(),
        },
    );
    // Its job, and every later one, go to worker 2 only.
    for n in 10..20 {
        h.submit(with(n, |o| o.strategy = Some(StrategyKind::RoundRobin)));
    }
    let later = h.submits();
    assert!(!later.is_empty());
    assert!(later.iter().all(|s| s.0 == peer(2)), "{later:?}");

    // A worker whose stats say draining is left out before any refusal.
    let mut draining = worker(3, 4);
    draining.stats.draining = true;
    let mut h = Harness::new(&[draining, worker(2, 4)]);
    for n in 0..6 {
        h.submit(with(n, |o| o.strategy = Some(StrategyKind::RoundRobin)));
    }
    assert!(h.submits().iter().all(|s| s.0 == peer(2)));
}
