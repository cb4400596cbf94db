//! `tsoracle-file serve` (feature `server`): filled in by the next commit.
