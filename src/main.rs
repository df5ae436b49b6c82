use std::process::ExitCode;

fn main() -> ExitCode {
    corsgate::cli::run()
}
