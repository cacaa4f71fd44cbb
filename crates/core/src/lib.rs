//! jobmesh's sans-IO core: the decisions, none of the I/O.
//!
//! * [`PoolView`]: who is in the pool, what each can do, how busy each is.
//! * [`Dispatcher`]: the submitting side. Owns every job this peer submitted,
//!   picks a worker through a [`Strategy`], re-dispatches on rejection or loss,
//!   enforces the job timeout, and yields exactly one [`JobEnd`] per job.
//! * [`WorkerSlots`]: the working side. Admits or rejects offered jobs against
//!   its slots and capabilities.
//! * [`StatsCoalescer`] and [`backoff`]: small policies the daemon applies.
//!
//! Contract (str0m / quinn style): nothing here opens a socket, spawns a task or
//! reads a clock. Time comes in as a `now: Instant` argument and the next
//! deadline goes out through `poll_timeout()`. After every `handle_*` call the
//! caller drains `poll_output()` until it returns `None`.

mod dispatcher;
mod policy;
mod pool;
mod strategy;
mod worker;

pub use dispatcher::{Dispatcher, DispatcherConfig, JobEnd, JobError, JobSpec, Output};
pub use policy::{backoff, StatsCoalescer};
pub use pool::{PoolChange, PoolView};
pub use strategy::{Candidate, LeastLoaded, Strategy};
pub use worker::WorkerSlots;
