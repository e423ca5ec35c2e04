//! The `seatrial` binary: command-line edges over the recipe and engine crates.

mod app;
mod cli;
mod exit;
mod gate;
mod generate;
mod infra;
mod lint;
mod probe;
mod progress;
mod render;
mod runs;
mod secrets;
mod serve;
mod signals;
mod source;
mod table;
mod trial;
mod warm;

use clap::Parser;

use crate::exit::Failure;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // A server logs its requests and trials by default; JSON when its config asks for it.
    let (serving, json) = match &cli.command {
        cli::Command::Serve(args) => (
            true,
            serve::config::load(args.config.as_deref())
                .is_ok_and(|c| c.log_format == serve::config::LogFormat::Json),
        ),
        _ => (false, false),
    };
    init_logging(cli.verbose, serving, json);
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

fn init_logging(verbose: u8, serving: bool, json: bool) {
    let default = match verbose {
        0 if serving => "info",
        0 => "warn",
        1 => "info,seatrial=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SEATRIAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and journals get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        builder.init();
    }
}
