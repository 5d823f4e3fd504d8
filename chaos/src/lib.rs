//! `sluice-chaos`: the kill-and-recover and fault-injection harness.
//!
//! `sluice-chaos run --seed S --kills N --duration SECS [--checkpoint LOCATION]` runs
//! the reference job ([`driver`]) under the supervise loop of `sluice supervise`, feeds
//! it from a directory of files and a broker read by a reliable receiver, injects the
//! faults the seed picks (SIGKILL, SIGSTOP/SIGCONT, a failed fsync, a torn write, a full
//! disk, an S3 outage or latency), then compares every output with an oracle computed
//! from the input alone ([`oracle`]) and prints a table and a JSON line.

pub mod broker;
pub mod driver;
pub mod harness;
pub mod oracle;
pub mod proxy;
pub mod rng;
