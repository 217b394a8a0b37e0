//! One autodiff graph at a time in a process.
//!
//! Burn 0.21's autodiff is not safe when two threads build and differentiate graphs at once: a
//! `backward()` on one thread can reclaim graph steps that another thread is still building
//! (tracel-ai/burn#5573, fixed upstream after 0.21 by tracel-ai/burn#5647). The other thread's
//! parameters then silently come back without a gradient, and AdamW leaves those tensors as
//! they were (no update, no weight decay). Seen here as tests of one binary that trained side
//! by side and parted from their host-arithmetic twins about once in forty runs.
//!
//! bertlab's forward-backward pass (`bertlab_train::forward_backward` and the trainer's step)
//! holds [`lock`] from the first op of its graph to the end of its backward, so threads that
//! train in one process take turns for that part and get whole gradients. Code that calls
//! `backward()` itself beside bertlab's training in the same process (tests do) takes it the
//! same way. One thread pays an uncontended lock per step.

use std::sync::{Mutex, MutexGuard};

static GRAPHS: Mutex<()> = Mutex::new(());

/// Hold the process's autodiff turn until the guard drops: take it before the first op of a
/// graph that will be differentiated and keep it through `backward()`. Not re-entrant: code
/// that holds it must not call a bertlab function that takes it (such as the trainer's step).
pub fn lock() -> MutexGuard<'static, ()> {
    // A panic while holding the turn leaves no graph state behind that the lock protects.
    GRAPHS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
