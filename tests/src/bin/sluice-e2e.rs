//! The `sluice` command, built into this package for the end-to-end tests (they run it
//! as `CARGO_BIN_EXE_sluice-e2e`; another package's binary is not reachable that way).

fn main() -> std::process::ExitCode {
    sluice_cli::main()
}
