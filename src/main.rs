//! The `futurnal` binary: parse the command line, run, and turn a failure into one line
//! on stderr with exit code 1 (clap exits 2 on usage errors).

use clap::Parser;

fn main() -> std::process::ExitCode {
    futurnal::install_tls_provider();
    let cli = futurnal::cli::Cli::parse();
    match futurnal::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
