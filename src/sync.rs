//! Locks that outlive a panic.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Takes `m` even when a thread panicked while holding it. The mutexes the
/// engine takes this way (the batching queue, window shards, shadow tallies)
/// guard state that every change leaves whole — one push, one swap, one
/// merge — so a panic elsewhere cannot leave it half-updated, and serving
/// on beats failing every later request on a poisoned lock.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
