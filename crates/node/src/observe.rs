//! Pool-wide observers: a worker streams the events of the jobs it runs to
//! the peers that subscribed (`observe`), and an observing peer subscribes
//! to every worker of its view.
//!
//! Worker side ([`Observers`]): at most [`MAX_OBSERVERS`] subscribers, each
//! behind a queue of [`OBSERVER_QUEUE`] events whose overflow drops the
//! oldest and counts them (the next batch says how many). Queues are
//! flushed after each input, in batches of at most [`MAX_OBSERVED_BATCH`].
//! With nobody subscribed nothing is kept but the last
//! [`OBSERVED_HISTORY`] events, for an observer that asks for history.
//!
//! Observer side ([`Watching`]): which workers it has subscribed to; a
//! worker whose link closes is subscribed to again at the next view change
//! or timeout while it is still in the view.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use jobmesh_wire::dc::{
    DcMsg, JobId, ObservedEvent, ObservedKind, Outcome, MAX_OBSERVED_BATCH, MAX_PROGRESS_TEXT,
    OBSERVED_HISTORY,
};
use jobmesh_wire::{Capability, PeerId};

/// Most subscribers a worker serves. Past it an `observe` is ignored (and
/// logged): observers are for people and dashboards, a handful per pool.
pub const MAX_OBSERVERS: usize = 32;
/// Events queued per subscriber between flushes. Overflow: the oldest go.
pub const OBSERVER_QUEUE: usize = 256;

/// A job this worker runs, as far as its observers care.
#[derive(Debug, Clone)]
struct Running {
    attempt: u32,
    capability: Capability,
    submitter: PeerId,
    started: Instant,
}

#[derive(Debug, Default)]
struct Subscriber {
    queue: VecDeque<ObservedEvent>,
    dropped: u64,
}

/// The worker side.
#[derive(Debug, Default)]
pub(crate) struct Observers {
    subscribers: BTreeMap<PeerId, Subscriber>,
    recent: VecDeque<ObservedEvent>,
    /// Bounded by the worker's slots (entries leave when their job ends).
    running: HashMap<JobId, Running>,
}

impl Observers {
    /// `peer` subscribes; with `history`, the recent events come first.
    /// Refused (false) past [`MAX_OBSERVERS`].
    pub(crate) fn subscribe(&mut self, peer: PeerId, history: bool) -> bool {
        if !self.subscribers.contains_key(&peer) && self.subscribers.len() >= MAX_OBSERVERS {
            return false;
        }
        let sub = self.subscribers.entry(peer).or_default();
        if history {
            sub.queue.extend(self.recent.iter().cloned());
        }
        true
    }

    pub(crate) fn unsubscribe(&mut self, peer: &PeerId) {
        self.subscribers.remove(peer);
    }

    /// A job started here, submitted by `submitter`.
    pub(crate) fn started(
        &mut self,
        now: Instant,
        at_ms: u64,
        job_id: JobId,
        attempt: u32,
        capability: Capability,
        submitter: PeerId,
    ) {
        let job = Running {
            attempt,
            capability,
            submitter,
            started: now,
        };
        self.record(event(job_id, &job, at_ms, ObservedKind::Started));
        self.running.insert(job_id, job);
    }

    /// What the worker sends its submitters tells how its jobs go on.
    pub(crate) fn on_worker_msg(&mut self, now: Instant, at_ms: u64, msg: &DcMsg) {
        match msg {
            DcMsg::Progress {
                job_id, progress, ..
            } => {
                if let Some(job) = self.running.get(job_id) {
                    let mut e = event(*job_id, job, at_ms, ObservedKind::Progress);
                    e.percent = progress.percent;
                    self.record(e);
                }
            }
            DcMsg::Result {
                job_id, outcome, ..
            } => {
                if let Some(job) = self.running.remove(job_id) {
                    let (kind, error) = match outcome {
                        Outcome::Ok { .. } => (ObservedKind::Completed, None),
                        Outcome::Err { message, .. } => (ObservedKind::Failed, Some(cut(message))),
                    };
                    let mut e = event(*job_id, &job, at_ms, kind);
                    e.error = error;
                    e.run_ms = Some(ms(now, job.started));
                    self.record(e);
                }
            }
            _ => {}
        }
    }

    /// A job of this worker was stopped without a result to report.
    pub(crate) fn cancelled(&mut self, now: Instant, at_ms: u64, job_id: JobId) {
        if let Some(job) = self.running.remove(&job_id) {
            let mut e = event(job_id, &job, at_ms, ObservedKind::Cancelled);
            e.run_ms = Some(ms(now, job.started));
            self.record(e);
        }
    }

    fn record(&mut self, e: ObservedEvent) {
        for sub in self.subscribers.values_mut() {
            if sub.queue.len() >= OBSERVER_QUEUE {
                sub.queue.pop_front();
                sub.dropped += 1;
            }
            sub.queue.push_back(e.clone());
        }
        if self.recent.len() >= OBSERVED_HISTORY {
            self.recent.pop_front();
        }
        self.recent.push_back(e);
    }

    /// The batches to send now, per subscriber.
    pub(crate) fn flush(&mut self) -> Vec<(PeerId, DcMsg)> {
        let mut out = Vec::new();
        for (peer, sub) in &mut self.subscribers {
            while !sub.queue.is_empty() || sub.dropped > 0 {
                let n = sub.queue.len().min(MAX_OBSERVED_BATCH);
                out.push((
                    *peer,
                    DcMsg::Observed {
                        events: sub.queue.drain(..n).collect(),
                        dropped: std::mem::take(&mut sub.dropped),
                    },
                ));
            }
        }
        out
    }
}

fn event(job_id: JobId, job: &Running, at_ms: u64, kind: ObservedKind) -> ObservedEvent {
    ObservedEvent {
        job_id,
        attempt: job.attempt,
        capability: job.capability.clone(),
        submitter: job.submitter,
        at_ms,
        event: kind,
        percent: None,
        run_ms: None,
        error: None,
    }
}

fn ms(now: Instant, since: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(since).as_millis()).unwrap_or(u64::MAX)
}

/// `text` cut to [`MAX_PROGRESS_TEXT`] bytes, on a character boundary.
fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_PROGRESS_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Jobs an observer tracks as running on the workers it observes, to say
/// `lost` when their worker leaves. Past it the newest are not tracked.
pub(crate) const MAX_TRACKED: usize = 4096;

/// The observer side: the workers this peer has subscribed to, and the jobs
/// it heard start on them and not end.
#[derive(Debug, Default)]
pub(crate) struct Watching {
    subscribed: BTreeSet<PeerId>,
    running: HashMap<PeerId, HashMap<JobId, ObservedEvent>>,
    tracked: usize,
}

impl Watching {
    /// The workers of `workers` not subscribed to yet (now marked so).
    pub(crate) fn newly_subscribed(
        &mut self,
        workers: impl Iterator<Item = PeerId>,
    ) -> Vec<PeerId> {
        workers.filter(|w| self.subscribed.insert(*w)).collect()
    }

    /// `peer`'s link closed: its subscription went with it (the jobs heard
    /// running on it stay tracked: if it left the pool, they are lost).
    pub(crate) fn lost(&mut self, peer: &PeerId) {
        self.subscribed.remove(peer);
    }

    /// Everyone subscribed to, forgotten.
    pub(crate) fn take(&mut self) -> BTreeSet<PeerId> {
        self.running.clear();
        self.tracked = 0;
        std::mem::take(&mut self.subscribed)
    }

    /// `worker`'s events arrived: which of its jobs run.
    pub(crate) fn seen(&mut self, worker: PeerId, events: &[ObservedEvent]) {
        let jobs = self.running.entry(worker).or_default();
        for e in events {
            match e.event {
                ObservedKind::Started if self.tracked < MAX_TRACKED => {
                    if jobs.insert(e.job_id, e.clone()).is_none() {
                        self.tracked += 1;
                    }
                }
                ObservedKind::Started | ObservedKind::Progress => {}
                _ => {
                    if jobs.remove(&e.job_id).is_some() {
                        self.tracked -= 1;
                    }
                }
            }
        }
    }

    /// The subscribed workers not in `view` left the pool: forgotten, with
    /// a `lost` event for each job heard starting on them and not ending.
    pub(crate) fn left(
        &mut self,
        view: &BTreeSet<PeerId>,
        at_ms: u64,
    ) -> Vec<(PeerId, Vec<ObservedEvent>)> {
        // A worker's link may close before the view loses it: its jobs
        // stay tracked until then.
        let gone: Vec<PeerId> = self
            .subscribed
            .iter()
            .chain(self.running.keys())
            .filter(|w| !view.contains(w))
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out = Vec::new();
        for worker in gone {
            self.subscribed.remove(&worker);
            let jobs = self.running.remove(&worker).unwrap_or_default();
            self.tracked -= jobs.len();
            let lost: Vec<ObservedEvent> = jobs
                .into_values()
                .map(|mut e| {
                    e.event = ObservedKind::Lost;
                    e.at_ms = at_ms;
                    e.percent = None;
                    e
                })
                .collect();
            if !lost.is_empty() {
                out.push((worker, lost));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use jobmesh_wire::dc::Progress;

    use super::*;

    fn cap() -> Capability {
        Capability::new("echo").expect("valid")
    }

    #[test]
    fn a_subscriber_gets_history_then_the_events_of_each_job() {
        let t = Instant::now();
        let mut o = Observers::default();
        let (a, b, submitter) = (PeerId::random(), PeerId::random(), PeerId::random());
        let j1 = uuid::Uuid::new_v4();
        o.started(t, 1, j1, 1, cap(), submitter);
        // Nobody listens: only the history keeps it.
        assert!(o.flush().is_empty());
        assert!(o.subscribe(a, true));
        assert!(o.subscribe(b, false));
        let progress = DcMsg::Progress {
            job_id: j1,
            attempt: 1,
            progress: Progress {
                percent: Some(50),
                ..Progress::default()
            },
        };
        o.on_worker_msg(t, 2, &progress);
        let result = DcMsg::Result {
            job_id: j1,
            attempt: 1,
            outcome: Outcome::Err {
                message: "x".repeat(1000),
                retryable: false,
            },
            load: None,
        };
        o.on_worker_msg(t + std::time::Duration::from_millis(7), 3, &result);
        let sent = o.flush();
        let kinds = |peer: PeerId| -> Vec<ObservedKind> {
            sent.iter()
                .filter(|(p, _)| *p == peer)
                .flat_map(|(_, m)| match m {
                    DcMsg::Observed { events, .. } => events.iter().map(|e| e.event).collect(),
                    _ => Vec::new(),
                })
                .collect()
        };
        let (started, progress, failed) = (
            ObservedKind::Started,
            ObservedKind::Progress,
            ObservedKind::Failed,
        );
        assert_eq!(kinds(a), vec![started, progress, failed]);
        assert_eq!(kinds(b), vec![progress, failed]);
        let Some((_, DcMsg::Observed { events, .. })) = sent.last() else {
            panic!("{sent:?}");
        };
        let failed = events.last().expect("an event");
        assert_eq!(failed.run_ms, Some(7));
        assert_eq!(failed.submitter, submitter);
        assert_eq!(
            failed.error.as_ref().map(String::len),
            Some(MAX_PROGRESS_TEXT)
        );
        // Flushed: nothing more until something happens.
        assert!(o.flush().is_empty());
        o.unsubscribe(&a);
        o.cancelled(t, 4, j1);
        assert!(o.flush().is_empty(), "ended already: no second end");
    }

    #[test]
    fn a_slow_subscriber_loses_the_oldest_and_is_told_how_many() {
        let t = Instant::now();
        let mut o = Observers::default();
        let a = PeerId::random();
        assert!(o.subscribe(a, false));
        for i in 0..OBSERVER_QUEUE + 10 {
            o.started(t, i as u64, uuid::Uuid::new_v4(), 1, cap(), a);
        }
        let sent = o.flush();
        assert_eq!(sent.len(), OBSERVER_QUEUE.div_ceil(MAX_OBSERVED_BATCH));
        let DcMsg::Observed { events, dropped } = &sent[0].1 else {
            panic!("{sent:?}");
        };
        assert_eq!(*dropped, 10);
        assert_eq!(events[0].at_ms, 10, "the oldest went");
        let total: usize = sent
            .iter()
            .map(|(_, m)| match m {
                DcMsg::Observed { events, .. } => events.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(total, OBSERVER_QUEUE);
        // Bounded: running jobs are the worker's own (its slots); here they
        // never end, which a worker cannot do past its slots.
    }

    #[test]
    fn subscribers_are_bounded() {
        let mut o = Observers::default();
        for _ in 0..MAX_OBSERVERS {
            assert!(o.subscribe(PeerId::random(), false));
        }
        assert!(!o.subscribe(PeerId::random(), true));
        let again = *o.subscribers.keys().next().expect("one");
        assert!(o.subscribe(again, true), "a subscriber may ask again");
    }

    #[test]
    fn a_worker_that_leaves_takes_its_running_jobs_with_it_as_lost() {
        let t = Instant::now();
        let (w, submitter) = (PeerId::random(), PeerId::random());
        let mut worker = Observers::default();
        assert!(worker.subscribe(submitter, false));
        let (j1, j2) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        worker.started(t, 1, j1, 1, cap(), submitter);
        worker.started(t, 2, j2, 1, cap(), submitter);
        worker.cancelled(t, 3, j2);
        let mut watching = Watching::default();
        assert_eq!(watching.newly_subscribed([w].into_iter()), vec![w]);
        for (_, msg) in worker.flush() {
            if let DcMsg::Observed { events, .. } = msg {
                watching.seen(w, &events);
            }
        }
        // Still in the view: nothing to say, even once its link closed.
        assert!(watching.left(&[w].into_iter().collect(), 9).is_empty());
        watching.lost(&w);
        let lost = watching.left(&BTreeSet::new(), 9);
        assert_eq!(lost.len(), 1);
        let (who, events) = &lost[0];
        assert_eq!(*who, w);
        assert_eq!(events.len(), 1, "j2 ended");
        assert_eq!(
            (events[0].job_id, events[0].event, events[0].at_ms),
            (j1, ObservedKind::Lost, 9)
        );
        assert_eq!(watching.tracked, 0);
        // Gone from the subscriptions too: it is asked again if it returns.
        assert_eq!(watching.newly_subscribed([w].into_iter()), vec![w]);
    }

    #[test]
    fn an_observer_subscribes_once_per_worker_until_its_link_goes() {
        let mut w = Watching::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!(w.newly_subscribed([a, b].into_iter()).len(), 2);
        assert!(w.newly_subscribed([a, b].into_iter()).is_empty());
        w.lost(&a);
        assert_eq!(w.newly_subscribed([a, b].into_iter()), vec![a]);
        assert_eq!(w.take().len(), 2);
    }
}
