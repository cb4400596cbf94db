//! The seed the seeding tests write: a high-water, two counters, a key
//! cap and one lease.

use tsoracle_core::LeaseRecord;
use tsoracle_driver_file::Seed;

use super::key;

/// The high-water of [`seed`].
pub const HIGH_WATER: u64 = 1_764_000_555_000;

/// A seed with every part set.
pub fn seed() -> Seed {
    Seed::new(HIGH_WATER)
        .with_counter(key("orders"), 42_000)
        .with_counter(key("users"), 7)
        .with_key_cap(500)
        .with_leases(vec![LeaseRecord {
            lease_id: 7,
            holder: b"svc-a".to_vec(),
            holder_epoch: 3,
            ttl_ms: 10_000,
            ts_upper_bound: HIGH_WATER,
            expires_at_ms: HIGH_WATER + 10_000,
            superseded: false,
        }])
}
