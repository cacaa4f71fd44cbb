//! jobmesh's sans-IO core: the decisions, none of the I/O.
//!
//! * [`PoolView`]: who is in the pool, what each can do, how busy each is.
//! * [`Dispatcher`]: the submitting side. Owns every job this peer submitted,
//!   picks a worker through a [`Strategy`], re-dispatches on rejection or loss,
//!   enforces the job timeout, and yields exactly one [`JobEnd`] per job.
//! * [`WorkerCore`]: the working side. Admits or rejects offered jobs against
//!   its slots and capabilities, tracks attempts, coalesces progress.
//! * [`JobState`]: the one lifecycle enum, changed only by
//!   [`JobState::transition`]; [`Strategy`]: how a worker is chosen.
//! * [`StatsCoalescer`] and [`backoff`]: small policies the daemon applies.
//! * [`chunking`]: how a blob is cut into chunks, and the receiver's checks (order, size, digest).
//!
//! Contract (str0m / quinn style): nothing here opens a socket, spawns a task or
//! reads a clock. Time comes in as a `now: Instant` argument and the next
//! deadline goes out through `poll_timeout()`. After every `handle_*` call the
//! caller drains `poll_output()` until it returns `None`.

pub mod chunking;
mod dispatcher;
mod job;
mod policy;
mod pool;
mod strategy;
mod worker;

pub use dispatcher::{
    Dispatcher, DispatcherConfig, Input, JobEnd, JobError, Output, UNREACHABLE_FOR, UNTRUSTED_FOR,
};
pub use job::{
    Attempt, AttemptOutcome, EventKind, IllegalTransition, JobEvent, JobOptions, JobSpec, JobState,
};
pub use policy::{backoff, StatsCoalescer};
pub use pool::{PoolChange, PoolView};
/// The RNG trait strategies receive (re-exported so a custom strategy needs no
/// direct `rand` dependency).
pub use rand::RngCore;
pub use strategy::{
    Affinity, Candidate, LeastLoaded, PickRequest, Random, RoundRobin, Strategy, StrategyKind,
};
pub use worker::{
    Admission, WorkerCore, WorkerOutput, KEEP_RESULTS_FOR, MAX_KEPT_RESULTS, ORPHAN_GRACE,
};
