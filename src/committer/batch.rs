//! The batch arithmetic, pure: a dense request applied to the counters
//! all or nothing, and undone when its batch fails to become durable.

use std::collections::BTreeMap;

use tsoracle_core::SeqKey;

use super::CommitError;
use crate::dense_record;

/// The previous value of each dense key a batch touched, to undo the batch
/// in memory if its write fails.
pub(super) type DenseUndo = BTreeMap<SeqKey, Option<u64>>;

/// Applies one dense request to `state`, all or nothing, and returns each
/// entry's block start. Like the trait says, any entry creates its key at 0
/// if absent (even with a count of 0). Each key's value before the batch is
/// recorded once in `undo`.
pub(super) fn apply_dense(
    state: &mut dense_record::DenseState,
    entries: &[(SeqKey, u32)],
    undo: &mut DenseUndo,
) -> Result<Vec<u64>, CommitError> {
    // Validate on a scratch view first, so a refusal changes nothing. Entries
    // may repeat a key: each sees the value the previous one left.
    let mut scratch: BTreeMap<&SeqKey, u64> = BTreeMap::new();
    let mut new_keys: u64 = 0;
    for (key, count) in entries {
        let start = match scratch.get(key) {
            Some(&value) => value,
            None => state.counters.get(key).copied().unwrap_or_else(|| {
                new_keys += 1;
                0
            }),
        };
        let next = start
            .checked_add(u64::from(*count))
            .ok_or(CommitError::Overflow)?;
        scratch.insert(key, next);
    }
    if new_keys > 0 && (state.key_count() as u64).saturating_add(new_keys) > state.cap {
        return Err(CommitError::Cardinality { cap: state.cap });
    }

    let mut starts = Vec::with_capacity(entries.len());
    for (key, count) in entries {
        let previous = state.counters.get(key).copied();
        let start = previous.unwrap_or(0);
        starts.push(start);
        undo.entry(key.clone()).or_insert(previous);
        // Cannot overflow: the same sequence of additions was checked above.
        state
            .counters
            .insert(key.clone(), start + u64::from(*count));
    }
    Ok(starts)
}

pub(super) fn undo_dense(state: &mut dense_record::DenseState, undo: DenseUndo) {
    for (key, previous) in undo {
        match previous {
            Some(value) => state.counters.insert(key, value),
            None => state.counters.remove(&key),
        };
    }
}
