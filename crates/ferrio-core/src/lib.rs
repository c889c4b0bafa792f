//! ferrio's core, with no Python in it.
//!
//! - [`pool`]: a thread pool whose workers are started lazily, named, retired after an idle timeout,
//!   and driven by a body the embedder supplies (the Python bindings attach each worker to the
//!   interpreter once and detach only to wait).
//! - [`completion`]: the hand-off of finished work to an event loop, one wake-up per batch.
//! - [`limiter`]: a capacity limiter that admits jobs to pools first come, first served.
//! - [`fork`]: which process owns a structure, so a forked child never locks its parent's state.
//! - [`stats`]: lock-free counters and latency histograms for `stats()`.
//! - [`shm`]: atomic cells in memory shared between processes.
//! - [`fileio`]: file reads that never wait for the disk.
//! - [`watchdog`]: the heartbeat of a watched event loop, and the arithmetic of its lags.
//!
//! Every blocking call in this crate waits on std primitives only, so the embedder decides how to
//! release its own locks (the GIL) around them.

pub mod completion;
pub mod fileio;
pub mod fork;
pub mod limiter;
pub mod pool;
pub mod prims;
pub mod shm;
pub mod stats;
mod sync;
pub mod watchdog;

pub use completion::{CompletionQueue, EventFd, Signal};
pub use limiter::{Limiter, LimiterStats};
pub use pool::{Pool, PoolConfig, PoolHandle, PoolStats, Rejected, WorkerCtx};
