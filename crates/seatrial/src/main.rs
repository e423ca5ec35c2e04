//! The `seatrial` binary: command-line edges over the recipe and engine crates.

mod app;
mod cli;
mod exit;
mod lint;
mod progress;
mod secrets;
mod source;
mod table;
mod trial;

use clap::Parser;

use crate::exit::Failure;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::INFRASTRUCTURE.into();
        }
    };
    match runtime.block_on(app::run(cli)) {
        Ok(()) => exit::OK.into(),
        Err(Failure { code, message }) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            code.into()
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,seatrial=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SEATRIAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
