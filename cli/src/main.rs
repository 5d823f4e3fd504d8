//! The `sluice` binary; the commands live in the `sluice_cli` library.

fn main() -> std::process::ExitCode {
    sluice_cli::main()
}
