//! Polling, the primary trigger: every enrolled repository once per interval, side by side
//! (bounded), one request per repository while nothing is new (ETag), more pages only when there
//! are new comments. Each repository's cursor is kept in the store.

use std::sync::Arc;

use futures_util::StreamExt;
use seatrial_forge::RepoName;

use super::{Delivery, ForgeLink, on_comment};
use crate::serve::metrics::ForgeOperation;
use crate::serve::state::Shared;

/// Repositories polled at once.
const POLL_PARALLELISM: usize = 32;

/// The cursor of a repository enrolled with no comments at all: any later comment is new.
const EPOCH: &str = "1970-01-01T00:00:00Z";

pub async fn poll_loop(shared: Arc<Shared>, link: Arc<ForgeLink>) {
    loop {
        let started = std::time::Instant::now();
        // Repositories are polled side by side (bounded), so a slow forge costs one round trip
        // per cycle, not one per repository.
        futures_util::stream::iter(&link.config.repos)
            .for_each_concurrent(POLL_PARALLELISM, |enrolled| {
                let repo = &enrolled.name;
                let (shared, link) = (&shared, &link);
                async move {
                    if let Err(e) = poll_repo(shared, link, repo).await {
                        tracing::warn!(repo = %repo, error = %e, "polling failed; trying again next cycle");
                    }
                }
            })
            .await;
        tracing::debug!(
            repos = link.config.repos.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "poll cycle done"
        );
        tokio::select! {
            () = tokio::time::sleep(link.config.poll_interval) => {}
            () = shared.shutdown.cancelled() => return,
        }
    }
}

/// One repository's new comments, each handed to [`on_comment`]; a newly enrolled repository's
/// existing commands are marked as seen instead (what was asked before enrolment is not run).
pub async fn poll_repo(shared: &Shared, link: &ForgeLink, repo: &RepoName) -> Result<(), String> {
    let name = repo.to_string();
    let cursor = shared
        .store
        .forge_cursor(&name)
        .await
        .map_err(|e| e.to_string())?;
    let comments = link
        .client
        .comments_since(repo, cursor.as_deref())
        .await
        .map_err(|e| {
            shared.metrics.forge_error(ForgeOperation::Poll);
            e.to_string()
        })?;
    let newest = comments
        .iter()
        .map(|c| c.updated_at.clone())
        .max()
        .or_else(|| cursor.is_none().then(|| EPOCH.to_owned()));
    if cursor.is_none() {
        for c in &comments {
            if seatrial_forge::parse_comment(&c.body, &link.config.command).is_some() {
                let _ = shared.store.mark_comment_seen(&link.key(), c.id).await;
            }
        }
        tracing::info!(repo = %repo, old = comments.len(), "enrolled: existing comments marked as seen");
    } else {
        for c in &comments {
            on_comment(shared, link, repo, c, &Delivery::Polled).await;
        }
    }
    if let Some(newest) = newest.filter(|n| cursor.as_ref().is_none_or(|c| n > c)) {
        shared
            .store
            .set_forge_cursor(&name, &newest)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
