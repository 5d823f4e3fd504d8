//! `sluice-tests`: cross-crate integration tests against real servers.
//!
//! The tests live in `tests/tests/`; this library is empty on purpose.
