//! Warm canonicals: a recipe's data-warm app, kept undeployed with its volumes at a stable stack
//! name, at a known-good release, with a known-good snapshot of every volume.
//!
//! - **Promotion** (`seatrial test --promote`, `seatrial warm seed`): a passing cold trial of the
//!   recipe's latest release runs at a canonical stack name; instead of deleting its data, the
//!   trial undeploys it, snapshots its volumes and records it, replacing the older canonical
//!   only once the new one is complete ([`promote`]).
//! - **Quick runs** (`seatrial test --quick`): the canonical is claimed (one run at a time; its
//!   volumes restored first when they may differ from the snapshot), deployed at the known-good
//!   version, upgraded to the change, and put back from the snapshot afterwards, whatever the
//!   verdict ([`claim`], [`put_back`]).
//!
//! The janitor never touches a recorded canonical ([`registry::Warm::stacks`]).

pub(crate) mod lock;
pub mod registry;

use std::collections::BTreeMap;

use seatrial_engine::{
    Engine, EngineError, ErrorKind, NoProgress, SnapshotMeta, UndeployOptions, fmt_duration,
};
use tokio_util::sync::CancellationToken;

pub use lock::WarmLock;
pub use registry::{Canonical, Summary, Warm, recipe_key};

use crate::stage::StageError;

/// The `io.seatrial.kind` of a canonical's objects.
pub const KIND_CANONICAL: &str = "canonical";

/// A canonical's stack name: `w` + the recipe's initials + 6 hex digits of a hash of the recipe
/// and the promoting run — distinct from trial stacks (`t…`), stable for the canonical's life.
pub fn canonical_stack(key: &str, run_id: &str) -> String {
    let trial = crate::identity::stack_name(key, "canonical", run_id);
    format!("w{}", &trial[1..])
}

fn infra(why: String) -> StageError {
    StageError::Error(why, ErrorKind::Infrastructure)
}

/// Runs blocking file work (hashing a snapshot) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, StageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| infra(format!("a snapshot task failed: {e}")))?
        .map_err(StageError::from)
}

/// The volumes' `CreatedAt` now, as the canonical records them.
async fn stamps(
    engine: &dyn Engine,
    stack: &str,
) -> Result<BTreeMap<String, Option<String>>, StageError> {
    Ok(engine
        .stack_volumes(stack)
        .await?
        .into_iter()
        .map(|v| (v.name, v.created_at))
        .collect())
}

/// A canonical claimed by a quick run: the lock, the record, and what claiming it did.
pub(crate) struct Claimed {
    pub(crate) _lock: WarmLock,
    pub(crate) canonical: Canonical,
    pub(crate) detail: String,
}

/// Claims the recipe's canonical for quick run `run_id`: takes its lock (waiting while another
/// run uses it), checks the known-good snapshot whole, undeploys what a killed run left
/// deployed, restores the volumes when they may differ from the snapshot (a run that did not
/// put them back, an interrupted restore, a volume removed or recreated by hand), and marks
/// the canonical in use. `expected_commit`: the known-good commit the run checked out.
pub(crate) async fn claim(
    engine: &dyn Engine,
    warm: &Warm,
    key: &str,
    expected_commit: &str,
    run_id: &str,
    cancel: &CancellationToken,
) -> Result<Claimed, StageError> {
    let waited = std::time::Instant::now();
    let mut had_to_wait = false;
    let lock = lock::acquire(&warm.lock_path(key), cancel, || {
        had_to_wait = true;
        tracing::info!(recipe = key, "waiting for another run using the canonical");
    })
    .await
    .map_err(infra)?
    .ok_or_else(|| infra("interrupted while waiting for the canonical".into()))?;
    let mut notes = Vec::new();
    if had_to_wait {
        notes.push(format!(
            "waited {} for another run using the canonical",
            fmt_duration(waited.elapsed())
        ));
    }
    let mut canonical = warm
        .load(key)
        .map_err(infra)?
        .ok_or_else(|| no_canonical(key))?;
    if canonical.commit != expected_commit {
        return Err(infra(format!(
            "the canonical of `{key}` was replaced (now {} at {}) while this run prepared; run it again",
            canonical.version,
            short(&canonical.commit)
        )));
    }
    let snapshot = warm.snapshot_dir(key, &canonical.stack);
    let manifest = {
        let dir = snapshot.clone();
        blocking(move || seatrial_engine::verify_snapshot(&dir)).await?
    };
    let stack = canonical.stack.clone();
    let mut reasons = Vec::new();
    if !engine.ps(&stack).await?.is_empty() {
        // A quick run died with the app up: its volumes hold the change's data.
        let options = UndeployOptions {
            remove_data: false,
            settle: true,
            ..UndeployOptions::default()
        };
        match engine.undeploy(&stack, &options, &NoProgress).await {
            Ok(_) | Err(EngineError::StackNotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        reasons.push("it was left deployed".to_owned());
    }
    if let Some(run) = warm.in_use(key) {
        reasons.push(format!("run {run} did not put it back"));
    }
    let unfinished = {
        let dir = snapshot.clone();
        blocking(move || seatrial_engine::unfinished_restore(&dir)).await?
    };
    if unfinished.is_some() {
        reasons.push("a restore was interrupted".to_owned());
    }
    let now = stamps(engine, &stack).await?;
    for record in &manifest.volumes {
        match (
            now.get(&record.name),
            canonical.volume_stamps.get(&record.name),
        ) {
            (None, _) => reasons.push(format!("volume `{}` is missing", record.name)),
            (Some(found), Some(known)) if found == known => {}
            _ => reasons.push(format!(
                "volume `{}` was recreated since it was last restored",
                record.name
            )),
        }
    }
    if !reasons.is_empty() {
        let report = engine
            .restore_volumes(&snapshot, &canonical.helper_image)
            .await?;
        canonical.volume_stamps = stamps(engine, &stack).await?;
        warm.save(&canonical).map_err(infra)?;
        notes.push(format!(
            "restored the canonical from its known-good snapshot first ({}): {} volume(s) in {}",
            reasons.join("; "),
            report.volumes.len(),
            fmt_duration(report.elapsed)
        ));
    }
    warm.mark_in_use(key, run_id).map_err(infra)?;
    notes.insert(
        0,
        format!(
            "canonical `{stack}` at {} ({}), snapshot verified ({} volume(s), {} bytes)",
            canonical.version,
            short(&canonical.commit),
            manifest.volumes.len(),
            manifest.bytes()
        ),
    );
    Ok(Claimed {
        _lock: lock,
        canonical,
        detail: notes.join("; "),
    })
}

/// The error for a recipe without a canonical.
pub(crate) fn no_canonical(key: &str) -> StageError {
    StageError::Error(no_canonical_message(key), ErrorKind::BadInput)
}

/// What to tell a user who asked for a quick run of a recipe without a canonical.
pub fn no_canonical_message(key: &str) -> String {
    format!(
        "recipe `{key}` has no canonical (no warm, known-good copy to run --quick against); make one with `seatrial warm seed <recipe repository>` (a cold trial of its latest release that keeps the data), or run cold (`--fallback cold`)"
    )
}

/// Puts the canonical's known-good data back after a quick run (the app is undeployed):
/// restores every volume from the snapshot, records the volumes' new stamps and the use, and
/// clears the in-use mark.
pub(crate) async fn put_back(
    engine: &dyn Engine,
    warm: &Warm,
    claimed: &mut Claimed,
) -> Result<String, StageError> {
    let c = &mut claimed.canonical;
    let snapshot = warm.snapshot_dir(&c.recipe, &c.stack);
    // Volumes the change added are not the known-good's: the next run must not find them.
    let extra: Vec<String> = engine
        .stack_volumes(&c.stack)
        .await?
        .into_iter()
        .map(|v| v.name)
        .filter(|v| !c.volumes.contains(v))
        .collect();
    engine.remove_volumes(&extra).await?;
    let report = engine.restore_volumes(&snapshot, &c.helper_image).await?;
    c.volume_stamps = stamps(engine, &c.stack).await?;
    c.last_used = Some(seatrial_engine::labels::now_rfc3339());
    warm.save(c).map_err(infra)?;
    warm.clear_in_use(&c.recipe).map_err(infra)?;
    let mut detail = format!(
        "restored {} volume(s) of `{}` to {} ({} bytes) in {}",
        report.volumes.len(),
        c.stack,
        c.version,
        report.bytes,
        fmt_duration(report.elapsed)
    );
    if !extra.is_empty() {
        detail.push_str(&format!(
            "; removed the change's new volume(s) {}",
            extra.join(", ")
        ));
    }
    Ok(detail)
}

/// What a promotion records about the trial it keeps.
pub(crate) struct Promotion<'a> {
    pub(crate) key: &'a str,
    pub(crate) source: &'a str,
    pub(crate) stack: &'a str,
    pub(crate) version: &'a str,
    pub(crate) commit: &'a str,
}

/// Keeps a passed trial's data as the recipe's canonical: undeploys the app and waits until
/// it is gone, snapshots its volumes, records the canonical, then removes the older canonical
/// (volumes, secrets, configs, snapshot). On failure the new stack's data is removed and the
/// older canonical stays as it was.
pub(crate) async fn promote(
    engine: &dyn Engine,
    warm: &Warm,
    p: &Promotion<'_>,
    cancel: &CancellationToken,
) -> Result<String, StageError> {
    let started = std::time::Instant::now();
    let result = promote_inner(engine, warm, p, cancel).await;
    if result.is_err() {
        // Nothing of this attempt may outlive it; the older canonical is untouched.
        let options = UndeployOptions {
            remove_data: true,
            settle: true,
            ..UndeployOptions::default()
        };
        match engine.undeploy(p.stack, &options, &NoProgress).await {
            Ok(_) | Err(EngineError::StackNotFound { .. }) => {}
            Err(e) => tracing::warn!(stack = p.stack, error = %e, "removing a failed promotion"),
        }
        let _ = std::fs::remove_dir_all(warm.recipe_dir(p.key).join(p.stack));
    }
    result.map(|d| format!("{d}; in {}", fmt_duration(started.elapsed())))
}

async fn promote_inner(
    engine: &dyn Engine,
    warm: &Warm,
    p: &Promotion<'_>,
    cancel: &CancellationToken,
) -> Result<String, StageError> {
    let helper_image = engine
        .ps(p.stack)
        .await?
        .into_iter()
        .map(|s| s.image)
        .find(|i| !i.is_empty())
        .ok_or_else(|| {
            infra(format!(
                "stack `{}` has no service to take an image from",
                p.stack
            ))
        })?;
    let options = UndeployOptions {
        remove_data: false,
        ..UndeployOptions::default()
    };
    engine.undeploy(p.stack, &options, &NoProgress).await?;
    let volumes: Vec<String> = engine
        .stack_volumes(p.stack)
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect();
    let _lock = lock::acquire(&warm.lock_path(p.key), cancel, || {
        tracing::info!(
            recipe = p.key,
            "waiting for a quick run to finish before promoting"
        );
    })
    .await
    .map_err(infra)?
    .ok_or_else(|| infra("interrupted while waiting for the canonical".into()))?;
    let dest = warm.snapshot_dir(p.key, p.stack);
    let meta = SnapshotMeta {
        recipe: Some(p.source.to_owned()),
        version: Some(p.version.to_owned()),
        commit: Some(p.commit.to_owned()),
    };
    let manifest = engine
        .snapshot_volumes(&volumes, &dest, &helper_image, &meta)
        .await?;
    let older = warm.load(p.key).ok().flatten();
    let canonical = Canonical {
        recipe: p.key.to_owned(),
        source: p.source.to_owned(),
        stack: p.stack.to_owned(),
        version: p.version.to_owned(),
        commit: p.commit.to_owned(),
        volumes: manifest.volumes.iter().map(|v| v.name.clone()).collect(),
        helper_image,
        created_at: seatrial_engine::labels::now_rfc3339(),
        last_used: None,
        volume_stamps: stamps(engine, p.stack).await?,
    };
    // The switch: from here on the new canonical is the recipe's.
    warm.save(&canonical).map_err(infra)?;
    warm.clear_in_use(p.key).map_err(infra)?;
    let mut detail = format!(
        "kept as the canonical of `{}`: {} volume(s), snapshot {} bytes at {}",
        p.key,
        canonical.volumes.len(),
        manifest.bytes(),
        dest.display()
    );
    if let Some(old) = older.filter(|o| o.stack != p.stack) {
        match remove_stack_data(engine, &old.stack).await {
            Ok(()) => detail.push_str(&format!(
                "; replaced the older canonical {} ({})",
                old.version, old.stack
            )),
            Err(e) => detail.push_str(&format!(
                "; the older canonical's stack {} could not be removed yet ({e}); `seatrial janitor` removes it",
                old.stack
            )),
        }
    }
    for dir in warm.stray_dirs(p.key, Some(p.stack)) {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(detail)
}

/// Removes everything of a stack, data included.
async fn remove_stack_data(engine: &dyn Engine, stack: &str) -> Result<(), EngineError> {
    let options = UndeployOptions {
        remove_data: true,
        ..UndeployOptions::default()
    };
    match engine.undeploy(stack, &options, &NoProgress).await {
        Ok(_) | Err(EngineError::StackNotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// What `seatrial warm drop` removed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Dropped {
    pub recipe: String,
    pub stack: String,
    pub volumes: Vec<String>,
    pub snapshot: String,
}

/// Removes a recipe's canonical: its stack (volumes, secrets, configs), its snapshot and its
/// record — waiting while a quick run uses it. `Ok(None)`: the recipe has no canonical.
pub async fn drop_canonical(
    engine: &dyn Engine,
    warm: &Warm,
    key: &str,
    cancel: &CancellationToken,
) -> Result<Option<Dropped>, String> {
    let _lock = lock::acquire(&warm.lock_path(key), cancel, || {
        eprintln!("waiting for a quick run of `{key}` to finish…");
    })
    .await?
    .ok_or("interrupted while waiting for the canonical")?;
    let Some(c) = warm.load(key)? else {
        return Ok(None);
    };
    remove_stack_data(engine, &c.stack)
        .await
        .map_err(|e| e.to_string())?;
    let snapshot = warm.recipe_dir(key).join(&c.stack);
    if let Err(e) = std::fs::remove_dir_all(&snapshot)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(format!("cannot remove {}: {e}", snapshot.display()));
    }
    warm.remove_record(key)?;
    warm.clear_in_use(key)?;
    Ok(Some(Dropped {
        recipe: key.to_owned(),
        stack: c.stack.clone(),
        volumes: c.volumes,
        snapshot: snapshot.display().to_string(),
    }))
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// Seconds since an RFC 3339 time (`None` when it does not parse).
pub fn age_secs(rfc3339: &str) -> Option<u64> {
    let then = seatrial_engine::labels::parse_rfc3339(rfc3339)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(now.saturating_sub(then))
}
