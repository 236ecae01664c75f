fn main() -> std::process::ExitCode {
    wasmsnap::cli::main()
}
