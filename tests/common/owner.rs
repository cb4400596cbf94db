//! What a displaced driver's errors say: the owner tests' expectations.

use tsoracle_consensus::ConsensusError;
use tsoracle_driver_file::FileDriverError;
use tsoracle_driver_file::vfs::Ownership;

/// What the owner check found, from a driver error (poisoned or not).
pub fn displaced(err: &ConsensusError) -> Ownership {
    let inner = FileDriverError::in_consensus(err).expect("a driver error");
    let first = match inner {
        FileDriverError::Poisoned { first, .. } => first.as_ref(),
        other => other,
    };
    match first {
        FileDriverError::Displaced { found, .. } => *found,
        other => panic!("expected Displaced, got {other:?}"),
    }
}

/// A displaced driver fails permanently.
pub fn assert_permanent(err: &ConsensusError) {
    assert!(
        matches!(err, ConsensusError::PermanentDriver(_)),
        "a displaced driver must fail permanently, got {err:?}"
    );
}
