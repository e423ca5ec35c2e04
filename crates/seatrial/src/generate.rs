//! `seatrial completions` and `seatrial man`: shell completion scripts and the man page,
//! generated from the CLI definition itself, so they never drift from the flags.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::{self, Failure};

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "seatrial", &mut out);
    print(&out, "the completion script")
}

/// Prints the roff man page on stdout.
pub fn man() -> Result<(), Failure> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(|e| {
            Failure::new(
                exit::INFRASTRUCTURE,
                format!("cannot render the man page: {e}"),
            )
        })?;
    print(
        title_first(&String::from_utf8_lossy(&out)).as_bytes(),
        "the man page",
    )
}

/// The page with its `.TH` line first: clap_mangen opens with the definition of the `Aq`
/// (apostrophe) string, and tools that recognise a man page by its opening `.TH` (mandb's
/// whatis parser, `file`) would not see one. The definition still comes before any use.
fn title_first(page: &str) -> String {
    let Some(at) = page.find("\n.TH ").map(|i| i + 1) else {
        return page.to_owned();
    };
    let end = page[at..].find('\n').map_or(page.len(), |i| at + i + 1);
    format!("{}{}{}", &page[at..end], &page[..at], &page[end..])
}

fn print(bytes: &[u8], what: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| {
            Failure::new(
                exit::INFRASTRUCTURE,
                format!("cannot write {what} to stdout: {e}"),
            )
        })
}
