fn main() -> std::process::ExitCode {
    flowrun::cli::main()
}
