//! The synchronisation primitives the completion protocol uses, swapped for loom's under `cfg(loom)`
//! so `tests/loom_completion.rs` can explore every interleaving of push and drain.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, Ordering},
    Mutex,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, Ordering},
    Mutex,
};
