//! `sluice-tests`: the cross-crate end-to-end tests, in `tests/tests/`: drivers killed
//! and restarted (`kill_recover`, `recovery`), the exactly-once sinks against real
//! servers (`sinks`), the receiver write-ahead log across restarts (`receiver_wal`).
//! Each crate's own `tests/` holds only that crate's tests. The `sluice-e2e` binary of
//! this package is the `sluice` command the tests run.
