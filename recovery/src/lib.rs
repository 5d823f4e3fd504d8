//! `sluice-recovery`: restart decisions and the process supervisor.
//!
//! Not built yet (issue 5). Its decision functions will be pure: they take what was
//! read (checkpoint files, the driver log, the clock) and return a decision, so every
//! restart path is testable without a disk.
