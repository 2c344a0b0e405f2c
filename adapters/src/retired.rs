//! What is left of an evaluation once its answer is known.

use std::any::Any;

/// The Store of a finished evaluation, not yet dropped.
///
/// Dropping a Store returns its instance's slot to the pool, and the pool
/// resets the memory the guest dirtied then: the `PAGEMAP_SCAN` walk, zeroed
/// pages and pages copied back from the module's image. That is a third to
/// a half of a fresh evaluation's host-side time (BENCHMARKS.md, issue 17),
/// and the verdict does not depend on it, so
/// [`LoadedModule::validate_then`](crate::LoadedModule::validate_then) hands
/// the verdict over first and drops this after.
pub(crate) struct Retired {
    // Only its drop matters.
    _store: Option<Box<dyn Any>>,
}

impl Retired {
    /// Nothing left to tear down (the adapter dropped its Store itself).
    pub(crate) const NOTHING: Retired = Retired { _store: None };

    /// Keeps `store` alive until this is dropped.
    pub(crate) fn store<T: 'static>(store: wasmtime::Store<T>) -> Self {
        Retired {
            _store: Some(Box::new(store)),
        }
    }
}
