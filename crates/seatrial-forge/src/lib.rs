//! The forge edge (Gitea and Forgejo; GitHub later): what a pull-request comment asks of
//! seatrial, and whether a webhook delivery really comes from the forge. The HTTP client, polling
//! and reporting build on these.

pub mod approval;
pub mod client;
pub mod command;
#[cfg(feature = "fake")]
pub mod fake;
pub mod webhook;

pub use client::{
    Comment, EtagCache, Forge, ForgeError, Gitea, Membership, PullRequest, Push, Replay, RepoName,
    StatusState, Token,
};
pub use command::{Command, CommandError, parse_comment};
pub use webhook::{
    PayloadError, PushEvent, SignatureError, comment_event, push_event, verify_signature,
};
