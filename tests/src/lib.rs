//! `sluice-tests`: the cross-crate end-to-end tests, in `tests/tests/`: drivers killed
//! and restarted (`kill_recover`, `recovery`), the exactly-once sinks against real
//! servers (`sinks`), the receiver write-ahead log across restarts (`receiver_wal`).
//! Each crate's own `tests/` holds only that crate's tests.
//!
//! The tests run the `sluice` command as a child process that is the test binary
//! itself, re-run as its ignored test `sluice_command` (the pattern of sled's crash
//! tests): [`sluice`] builds that command, [`run_sluice_command`] is the child's body.
//! A test binary always runs the command built from its own sources (a binary target
//! would be found at one shared path, which builds of other checkouts overwrite), with
//! the crash points of the `failpoints` feature compiled in.

use std::ffi::OsStr;
use std::process::Command;

/// Where [`sluice`] passes the command's arguments to the child.
const ARGS: &str = "SLUICE_TEST_CLI_ARGS";
/// Separates the arguments in [`ARGS`].
const SEP: char = '\u{1f}';

/// `sluice ARGS…` as a child process (see the crate docs). The calling test file must
/// define the child's entry point:
///
/// ```ignore
/// #[test]
/// #[ignore = "the sluice command, run as a child process by this file's tests"]
/// fn sluice_command() {
///     sluice_tests::run_sluice_command()
/// }
/// ```
pub fn sluice<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            a.as_ref()
                .to_str()
                .expect("sluice test arguments are UTF-8")
                .to_owned()
        })
        .collect();
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "sluice_command", "--ignored", "--quiet"])
        .args(["--test-threads=1", "--nocapture"])
        .env(ARGS, args.join(&SEP.to_string()));
    cmd
}

/// The child's body: runs `sluice` with the arguments [`sluice`] passed, and exits with
/// its status. Fails when run without them (it is no test of its own).
pub fn run_sluice_command() -> ! {
    let joined = std::env::var(ARGS).unwrap_or_else(|_| {
        panic!("sluice_command is the child process of the other tests ({ARGS} unset)")
    });
    let args = std::iter::once("sluice".to_owned()).chain(
        joined
            .split(SEP)
            .filter(|a| !a.is_empty())
            .map(str::to_owned),
    );
    std::process::exit(i32::from(sluice_cli::status_with(args)))
}

/// The JSON document in a child's standard output (the test harness prints a line of
/// its own before it).
pub fn json_in(stdout: &[u8]) -> &[u8] {
    let at = stdout
        .iter()
        .position(|b| *b == b'{')
        .unwrap_or(stdout.len());
    &stdout[at..]
}
