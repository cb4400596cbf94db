//! One module per subcommand: its long help (`LONG_ABOUT`, which the
//! command table in `main` refers to), its arguments (a `clap::Args`
//! struct), its output types (plain structs that serialize, so `--json` is
//! a type), and its `exec`.

pub(crate) mod dense;
pub(crate) mod export;
pub(crate) mod init;
pub(crate) mod inspect;
pub(crate) mod migrate;
pub(crate) mod pending;
pub(crate) mod restore;
pub(crate) mod seed;
#[cfg(feature = "server")]
pub(crate) mod serve;
pub(crate) mod verify;
