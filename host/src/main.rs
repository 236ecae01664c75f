//! `wasmsnap`: the command line over the daemon (`wasmsnap-daemon`), the
//! policy harness (`wasmsnap-harness`) and the bench (`wasmsnap-bench`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
