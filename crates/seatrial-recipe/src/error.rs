//! Errors of reading a recipe: each names the file, where in it, and what to do.

use std::path::PathBuf;

use crate::validate::Finding;

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no compose file in {dir}: expected one of compose.yml, compose.yaml, docker-compose.yml, docker-compose.yaml"
    )]
    NoComposeFile { dir: PathBuf },
    #[error(
        "{path} is {size} bytes, over the {limit}-byte limit for a compose file; is it really one?"
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{path} is not valid YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}{}: at `{at}`: {message}", line_suffix(*line))]
    Schema {
        path: PathBuf,
        at: String,
        message: String,
        /// The line of `at` in the file, when it could be found.
        line: Option<usize>,
    },
    #[error("{path} is not a directory; a recipe is a directory")]
    NotADirectory { path: PathBuf },
    /// A file the recipe names (a COMPOSE_FILE entry, `.env.sample`, `abra.sh`) is unusable.
    #[error("`{entry}` of recipe {recipe} {reason}")]
    ComposeFile {
        recipe: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{file}{}: at `{at}`: {message}", line_suffix(*line))]
    Interpolation {
        file: String,
        at: String,
        message: String,
        line: Option<usize>,
    },
    #[error("git {command} in {dir} failed: {message}")]
    Git {
        dir: PathBuf,
        command: String,
        message: String,
    },
    #[error("{path} cannot be deployed:\n{}", render_findings(findings))]
    Invalid {
        path: PathBuf,
        findings: Vec<Finding>,
    },
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

fn render_findings(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("  - {f}"))
        .collect::<Vec<_>>()
        .join("\n")
}
