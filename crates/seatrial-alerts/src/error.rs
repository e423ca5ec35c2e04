//! Why an alert was not delivered: each error names the target (its `describe()`), what went
//! wrong, and what to do. None carries a secret.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The target's configuration is wrong (see [`crate::AlertTarget::validate`]).
    #[error("{target}: {problem}; fix this [[alerts]] entry in the config")]
    Config { target: String, problem: String },
    /// The server could not be reached or the connection broke.
    #[error(
        "{target}: could not send: {detail}; check that the server is up and reachable from seatrial's host"
    )]
    Unreachable { target: String, detail: String },
    /// The HTTP server answered, but not with a 2xx.
    #[error("{target}: the server answered HTTP {status}{answer}; {hint}")]
    Rejected {
        target: String,
        status: u16,
        /// The start of the answer's body, `: …`, or empty.
        answer: String,
        hint: &'static str,
    },
    /// The SMTP conversation failed.
    #[error("{target}: SMTP: {detail}; {hint}")]
    Smtp {
        target: String,
        detail: String,
        hint: &'static str,
    },
    /// The alert could not be put into a message (a bug, or an address lettre refuses).
    #[error("{target}: could not build the message: {detail}")]
    Message { target: String, detail: String },
    /// No answer in time.
    #[error(
        "{target}: no answer within {} s; the alert was not delivered: check that the server is up and not overloaded",
        .after.as_secs_f32()
    )]
    Timeout { target: String, after: Duration },
}

/// The error and its causes, `outer: inner: innermost`, with `secrets` blanked out in case an
/// underlying library or the server echoed one.
pub(crate) fn chain(err: &dyn std::error::Error, secrets: &[&str]) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    scrub(&text, secrets)
}

pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "***");
    }
    text
}
