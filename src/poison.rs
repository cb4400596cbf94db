//! Locks over plain values that a panic elsewhere cannot leave half-written
//! (each is replaced whole, in one statement): a poisoned lock is taken
//! anyway rather than spreading one panic to every later reader.

#[cfg(any(feature = "simfs", windows))]
use std::sync::{Mutex, MutexGuard};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A read guard, poisoned or not.
pub(crate) fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A write guard, poisoned or not.
pub(crate) fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A mutex guard, poisoned or not.
#[cfg(any(feature = "simfs", windows))]
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
