//! Who may start a trial from a comment, fail-closed: a user on the allowlist, or a member of
//! the repository's owner org as the forge answers it (any other answer, a redirect or an error
//! included, denies).

use seatrial_forge::{Membership, RepoName};

use super::ForgeLink;

/// `Err`: the answer to give on the pull request.
pub async fn authorize(link: &ForgeLink, repo: &RepoName, user: &str) -> Result<(), String> {
    if link.config.allow.iter().any(|a| a == user) {
        return Ok(());
    }
    match link.client.membership(&repo.owner, user).await {
        Membership::Member => Ok(()),
        Membership::Denied(why) => {
            tracing::info!(repo = %repo, user = %user, why = %why, "!testme denied");
            Err(format!(
                "only members of {} (or allowed users) can start seatrial trials; nothing was queued.",
                repo.owner
            ))
        }
    }
}
