//! The forge a server polls and the recipe repositories enrolled on it.

use std::time::Duration;

use seatrial_recipe::policy::Permit;

use super::ApiToken;

/// One enrolled repository.
#[derive(Debug, Clone)]
pub struct EnrolledRepo {
    pub name: seatrial_forge::RepoName,
    /// The recipe's directory inside the repository (`None`: the root).
    pub recipe: Option<std::path::PathBuf>,
    pub timeout: Option<Duration>,
    /// Probe settings for its trials.
    pub probe: seatrial_trial::settings::Overrides,
    /// Policy findings its (untrusted) recipes may have.
    pub permit: Vec<Permit>,
    /// A push to one of its branches runs the app's push gate (`gate = true`).
    pub gate: bool,
    /// The gate config inside the repository (`None`: `gate.toml`).
    pub gate_config: Option<std::path::PathBuf>,
}

/// `[forge]` and `[[repos]]`: enrolled recipe repositories on a Gitea/Forgejo.
#[derive(Clone)]
pub struct ForgeConfig {
    /// `gitea` or `forgejo`.
    pub kind: String,
    pub url: String,
    pub token: seatrial_forge::Token,
    pub poll_interval: Duration,
    /// Users allowed besides members of each repository's owner org.
    pub allow: Vec<String>,
    pub webhook_secret: Option<ApiToken>,
    /// The comment command (default `!testme`).
    pub command: String,
    pub repos: Vec<EnrolledRepo>,
}

impl std::fmt::Debug for ForgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeConfig")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("poll_interval", &self.poll_interval)
            .field("repos", &self.repos.len())
            .finish_non_exhaustive()
    }
}
