//! The agentd binary, built inside the test crate so that the integration
//! tests can name it (`CARGO_BIN_EXE_agentd-under-test`). Same `main` as
//! `agentd/src/main.rs`.
fn main() -> std::process::ExitCode {
    agentd::cli::main()
}
