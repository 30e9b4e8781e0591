//! The `futurnal` binary: parse the command line, run, and turn a failure into one line
//! on stderr with exit code 1 (clap exits 2 on usage errors).

use clap::Parser;

/// mimalloc: reading git history allocates and frees many short-lived buffers, which
/// glibc's allocator keeps returning to the kernel (page clearing showed in profiles).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    futurnal::install_tls_provider();
    let cli = futurnal::cli::Cli::parse();
    match futurnal::app::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
