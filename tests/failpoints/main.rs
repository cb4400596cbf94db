//! Every test that arms a failpoint, in one target (as raft-engine's
//! `tests/failpoints/`): `cargo test --features failpoints --test
//! failpoints`. The modules are grouped by the property they test.
//!
//! Failpoints are process-wide. Every test here holds a
//! `fail::FailScenario` while it runs (the scenario is a process-wide lock,
//! so they run one at a time), and none sees another's failpoints.
//!
//! This target lives in a folder of its own, so it reaches the shared
//! helpers by their path; every other target includes them with
//! `mod common;`.
#![cfg(feature = "failpoints")]

#[path = "../common/mod.rs"]
mod common;

mod cancel_safety;
mod group_commit;
#[cfg(feature = "metrics")]
mod metrics;
mod owner;
mod process_kills;
mod publication;
mod seeding;
#[cfg(feature = "server")]
mod serve;
