//! `sluice-chaos`: the kill-and-recover and fault-injection harness.
//!
//! Not built yet (issue 6).
