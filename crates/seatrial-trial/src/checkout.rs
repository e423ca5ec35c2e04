//! Checkouts: the change (at its ref, or a directory as it is) and the release before it, on a
//! blocking thread that cancellation stops.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use seatrial_engine::ErrorKind;
use seatrial_recipe::git::{self, Checkout};

use crate::TrialConfig;
use crate::stage::StageError;
use crate::warm::Canonical;

/// A recipe revision ready to deploy.
pub(crate) struct Revision {
    pub(crate) dir: PathBuf,
    pub(crate) commit: Option<String>,
    pub(crate) version: Option<String>,
    _checkout: Option<Checkout>,
}

impl Revision {
    /// A checkout made elsewhere (reconcile's), at `version`.
    pub(crate) fn checked_out(c: Checkout, version: Option<String>) -> Self {
        Self {
            dir: c.dir.clone(),
            commit: Some(c.commit.clone()),
            version,
            _checkout: Some(c),
        }
    }
}

/// Sets a cancel flag when dropped: a stage body dropped by cancellation stops the git
/// commands it started on a blocking thread.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// [`checkouts`] on a blocking thread: git (a clone from a server that never answers) never
/// holds a runtime thread, and cancelling the trial kills it.
pub(crate) async fn checkouts_off_runtime(
    config: &TrialConfig,
    known_good: Option<&Canonical>,
) -> Result<(Revision, Option<Revision>), StageError> {
    let known_good = known_good.map(|c| (c.commit.clone(), c.version.clone()));
    let flag = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = CancelOnDrop(flag.clone());
    let stop = git::Stop {
        timeout: git::GIT_TIMEOUT,
        cancel: Some(flag),
    };
    let config = config.clone();
    tokio::task::spawn_blocking(move || checkouts(&config, known_good.as_ref(), &stop))
        .await
        .map_err(|e| {
            StageError::Error(
                format!("the checkout task failed: {e}"),
                ErrorKind::Infrastructure,
            )
        })?
        .map_err(|e| StageError::Error(e, ErrorKind::BadInput))
}

/// The change (at the ref, or the directory as it is) and what is installed before it: the
/// release before it, if any — or, for a quick run, the canonical's known-good commit
/// (`known_good`: commit and version).
fn checkouts(
    config: &TrialConfig,
    known_good: Option<&(String, String)>,
    stop: &git::Stop,
) -> Result<(Revision, Option<Revision>), String> {
    let path = Path::new(&config.recipe);
    let change = match &config.reference {
        None if path.is_dir() => {
            let (commit, dirty) = if git::is_repo(path) {
                let (c, d) = git::head(path).map_err(|e| e.to_string())?;
                (Some(c), d)
            } else {
                (None, false)
            };
            let version = match (&commit, dirty) {
                (Some(c), false) if git::is_toplevel(path) => git::versions(path)
                    .ok()
                    .and_then(|v| v.at(c).map(|r| r.tag.clone())),
                _ => None,
            };
            Revision {
                dir: path.to_owned(),
                commit,
                version,
                _checkout: None,
            }
        }
        None => {
            return Err(format!(
                "recipe `{}` is not a directory; give a directory, or a repository with --ref",
                config.recipe
            ));
        }
        Some(reference) => {
            let c = git::checkout_with(
                &config.recipe,
                reference,
                &config.data_dir.join("checkouts"),
                stop,
            )
            .map_err(|e| e.to_string())?;
            let version = git::versions(&c.dir)
                .ok()
                .and_then(|v| v.at(&c.commit).map(|r| r.tag.clone()));
            let dir = match &config.subdir {
                Some(sub) => {
                    let dir = c.dir.join(sub);
                    if !dir.is_dir() {
                        return Err(format!(
                            "the recipe path {} does not exist in {} at {reference}",
                            sub.display(),
                            config.recipe
                        ));
                    }
                    dir
                }
                None => c.dir.clone(),
            };
            Revision {
                dir,
                commit: Some(c.commit.clone()),
                version,
                _checkout: Some(c),
            }
        }
    };
    if config.promote {
        check_latest_release(config, &change)?;
    }
    if let Some((commit, version)) = known_good {
        if change.commit.as_deref() == Some(commit.as_str()) {
            return Ok((change, None));
        }
        let Some(source) = config.reference.as_ref().map(|_| change_source(&change)) else {
            return Err(format!(
                "a quick run needs the change as a ref of the recipe's repository (--ref), so that the canonical's known-good commit {} can be checked out next to it",
                &commit[..commit.len().min(12)]
            ));
        };
        let prev = checkout_revision(config, &source, commit, Some(version.clone()), stop)?;
        return Ok((change, Some(prev)));
    }
    // Releases are the recipe repository's tags: a recipe in a subdirectory has none.
    if !git::is_toplevel(&change.dir) {
        return Ok((change, None));
    }
    let Some(commit) = change.commit.clone() else {
        return Ok((change, None));
    };
    let versions = git::versions(&change.dir).map_err(|e| e.to_string())?;
    let Some(previous) = versions.previous_for(&commit).cloned() else {
        return Ok((change, None));
    };
    if previous.commit == commit {
        return Ok((change, None));
    }
    let prev = checkout_revision(
        config,
        &change_source(&change),
        &previous.tag,
        Some(previous.tag.clone()),
        stop,
    )?;
    Ok((change, Some(prev)))
}

/// Where to clone other revisions from: the change's repository has every tag and commit the
/// source has.
fn change_source(change: &Revision) -> String {
    change.dir.to_string_lossy().into_owned()
}

fn checkout_revision(
    config: &TrialConfig,
    source: &str,
    reference: &str,
    version: Option<String>,
    stop: &git::Stop,
) -> Result<Revision, String> {
    let c = git::checkout_with(source, reference, &config.data_dir.join("checkouts"), stop)
        .map_err(|e| e.to_string())?;
    Ok(Revision {
        dir: c.dir.clone(),
        commit: Some(c.commit.clone()),
        version,
        _checkout: Some(c),
    })
}

/// `--promote` keeps only the recipe's latest release: refused (before anything is deployed)
/// for any other change.
fn check_latest_release(config: &TrialConfig, change: &Revision) -> Result<(), String> {
    let refuse = |why: String| {
        Err(format!(
            "--promote refused: {why}; a canonical is made only from the recipe's latest release (`seatrial warm seed {}` picks it)",
            config.recipe
        ))
    };
    if !git::is_toplevel(&change.dir) {
        return refuse(format!(
            "`{}` is not the top of a git repository, so it has no releases",
            config.recipe
        ));
    }
    let Some(commit) = &change.commit else {
        return refuse("the change has no commit".into());
    };
    let versions = git::versions(&change.dir).map_err(|e| e.to_string())?;
    let Some(latest) = versions.latest() else {
        return refuse(format!("`{}` has no release tags", config.recipe));
    };
    if &latest.commit != commit || change.version.as_deref() != Some(latest.tag.as_str()) {
        return refuse(format!(
            "the change ({}) is not the latest release {}",
            config.reference.as_deref().unwrap_or("the working tree"),
            latest.tag
        ));
    }
    Ok(())
}
