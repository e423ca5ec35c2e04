//! The forge edge (Gitea and Forgejo; GitHub later): what a pull-request comment asks of
//! seatrial, and whether a webhook delivery really comes from the forge. The HTTP client, polling
//! and reporting build on these.

pub mod command;
pub mod webhook;

pub use command::{Command, CommandError, parse_comment};
pub use webhook::{SignatureError, verify_signature};
