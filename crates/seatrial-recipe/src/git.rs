//! A recipe's git side, by shelling out to `git`: versions from annotated tags, isolated
//! checkouts at a ref (never touching the maintainer's working tree), commit and dirtiness.

use std::cmp::Ordering;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use crate::error::RecipeError;

/// A recipe release: an annotated tag `<semver>+<upstream>`, e.g. `10.7.1+26.6.2`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Version {
    pub tag: String,
    #[serde(serialize_with = "serialize_semver")]
    pub semver: semver::Version,
    /// The part after `+`: the upstream app's version.
    pub upstream: Option<String>,
    /// The commit the tag points to.
    pub commit: String,
}

fn serialize_semver<S: serde::Serializer>(v: &semver::Version, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

impl Version {
    /// Recipe versions order by the semver part only (`1.10.0+x` > `1.9.0+y`).
    pub fn cmp_release(&self, other: &Self) -> Ordering {
        self.semver.cmp_precedence(&other.semver)
    }

    /// Parses a tag name; `None` when it is not `<semver>[+<upstream>]`.
    pub fn parse_tag(tag: &str, commit: &str) -> Option<Self> {
        let semver = semver::Version::parse(tag).ok()?;
        let upstream = (!semver.build.is_empty()).then(|| semver.build.to_string());
        Some(Self {
            tag: tag.to_owned(),
            semver,
            upstream,
            commit: commit.to_owned(),
        })
    }
}

/// The tags of a recipe repository.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Versions {
    /// Annotated version tags, lowest first.
    pub releases: Vec<Version>,
    /// Lightweight tags that look like versions: ignored (a lint finding).
    pub lightweight: Vec<String>,
    /// Annotated tags that are not versions.
    pub other_tags: Vec<String>,
}

impl Versions {
    /// The release a change at `commit` upgrades from: the highest release below the release
    /// tagged at `commit`, or — for an untagged change — the highest release.
    pub fn previous_for(&self, commit: &str) -> Option<&Version> {
        match self.releases.iter().find(|v| v.commit == commit) {
            Some(current) => self
                .releases
                .iter()
                .filter(|v| v.cmp_release(current) == Ordering::Less)
                .max_by(|a, b| a.cmp_release(b)),
            None => self.releases.iter().max_by(|a, b| a.cmp_release(b)),
        }
    }

    /// The release tagged at `commit`, if any.
    pub fn at(&self, commit: &str) -> Option<&Version> {
        self.releases.iter().find(|v| v.commit == commit)
    }

    pub fn latest(&self) -> Option<&Version> {
        self.releases.iter().max_by(|a, b| a.cmp_release(b))
    }
}

/// How long one git command may take by default: long enough for a large clone, short enough
/// that a clone from a server that never answers does not hang a trial for good.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Output kept per stream of a git command.
const MAX_GIT_OUTPUT: u64 = 4 * 1024 * 1024;

/// When a git command must stop: its deadline, or a cancel flag set by whoever waits for it
/// (a cancelled trial). A stopped command is killed with everything it started.
#[derive(Debug, Clone)]
pub struct Stop {
    pub timeout: Duration,
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for Stop {
    fn default() -> Self {
        Self {
            timeout: GIT_TIMEOUT,
            cancel: None,
        }
    }
}

impl Stop {
    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(AtomicOrdering::Relaxed))
    }
}

/// Kills a process group (the git command and its helpers, e.g. `git-remote-https`).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn git(dir: &Path, args: &[&str]) -> Result<String, RecipeError> {
    git_with(dir, args, &Stop::default())
}

/// Runs git in `dir` until it exits, its timeout passes or it is cancelled.
fn git_with(dir: &Path, args: &[&str], stop: &Stop) -> Result<String, RecipeError> {
    let fail = |message: String| RecipeError::Git {
        dir: dir.to_owned(),
        command: args.join(" "),
        message,
    };
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a stop takes its helpers with it.
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("cannot run git: {e}; is git installed?")))?;
    let capture = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(MAX_GIT_OUTPUT).read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = capture(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = capture(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let mut wait = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                kill_group(child.id());
                return Err(fail(format!("cannot wait for git: {e}")));
            }
        }
        let why = if stop.cancelled() {
            Some("stopped: the run was cancelled".to_owned())
        } else if started.elapsed() >= stop.timeout {
            Some(format!(
                "stopped after {}s without finishing (is the repository reachable?)",
                stop.timeout.as_secs()
            ))
        } else {
            None
        };
        if let Some(why) = why {
            kill_group(child.id());
            let _ = child.wait();
            return Err(fail(why));
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return Err(fail(String::from_utf8_lossy(&stderr).trim().to_owned()));
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// Is `dir` inside a git work tree?
pub fn is_repo(dir: &Path) -> bool {
    git(dir, &["rev-parse", "--is-inside-work-tree"]).is_ok_and(|o| o.trim() == "true")
}

/// Is `dir` the top of its git work tree? A recipe in a subdirectory of a larger repository
/// (a monorepo, seatrial's own examples) does not own that repository's tags.
pub fn is_toplevel(dir: &Path) -> bool {
    let Ok(top) = git(dir, &["rev-parse", "--show-toplevel"]) else {
        return false;
    };
    match (Path::new(top.trim()).canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Reads the version tags of the repository at `dir`.
pub fn versions(dir: &Path) -> Result<Versions, RecipeError> {
    let out = git(
        dir,
        &[
            "for-each-ref",
            "refs/tags",
            "--format=%(refname:strip=2)%09%(objecttype)%09%(objectname)%09%(*objectname)",
        ],
    )?;
    let mut v = Versions::default();
    for line in out.lines() {
        let parts: Vec<&str> = line.split('\t').collect();
        let [tag, kind, object, peeled] = parts.as_slice() else {
            continue;
        };
        let annotated = *kind == "tag";
        let commit = if annotated { peeled } else { object };
        match (annotated, Version::parse_tag(tag, commit)) {
            (true, Some(version)) => v.releases.push(version),
            (false, Some(_)) => v.lightweight.push((*tag).to_owned()),
            (true, None) => v.other_tags.push((*tag).to_owned()),
            (false, None) => {}
        }
    }
    v.releases.sort_by(|a, b| a.cmp_release(b));
    Ok(v)
}

/// The commit checked out in `dir`, and whether its work tree has uncommitted changes.
pub fn head(dir: &Path) -> Result<(String, bool), RecipeError> {
    let commit = git(dir, &["rev-parse", "HEAD"])?.trim().to_owned();
    // Only the recipe's own directory counts (it may live inside a larger repository).
    let dirty = !git(
        dir,
        &[
            "status",
            "--porcelain",
            "--untracked-files=normal",
            "--",
            ".",
        ],
    )?
    .trim()
    .is_empty();
    Ok((commit, dirty))
}

/// An isolated checkout of a recipe at one ref, removed when dropped (unless kept).
#[derive(Debug)]
pub struct Checkout {
    pub dir: PathBuf,
    pub commit: String,
    keep: bool,
}

impl Checkout {
    /// Keeps the directory after drop (for debugging).
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.dir.clone()
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

static CHECKOUTS: AtomicU64 = AtomicU64::new(0);

/// Clones `source` (a path or URL git understands) into a fresh directory under `work_root`
/// and checks out `reference` (branch, tag or commit) detached. The source repository is only
/// read; every call gets its own directory, so concurrent loads never share a checkout.
pub fn checkout(source: &str, reference: &str, work_root: &Path) -> Result<Checkout, RecipeError> {
    checkout_with(source, reference, work_root, &Stop::default())
}

/// [`checkout`], stopped (and its directory removed) when `stop` says so.
pub fn checkout_with(
    source: &str,
    reference: &str,
    work_root: &Path,
    stop: &Stop,
) -> Result<Checkout, RecipeError> {
    std::fs::create_dir_all(work_root).map_err(|e| RecipeError::Io {
        path: work_root.to_owned(),
        source: e,
    })?;
    let unique = format!(
        "checkout-{}-{}-{}",
        std::process::id(),
        CHECKOUTS.fetch_add(1, AtomicOrdering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let dir = work_root.join(unique);
    let mut checkout = Checkout {
        dir: dir.clone(),
        commit: String::new(),
        keep: false,
    };
    let dir_str = dir.to_string_lossy().into_owned();
    // git runs in `work_root`: a relative repository path (`.`, `../recipe`) means the caller's
    // directory, so it is made absolute first.
    let absolute_source = Path::new(source)
        .is_relative()
        .then(|| Path::new(source).canonicalize().ok())
        .flatten()
        .map(|p| p.to_string_lossy().into_owned());
    let source = absolute_source.as_deref().unwrap_or(source);
    git_with(
        work_root,
        &[
            "clone",
            "--quiet",
            "--no-checkout",
            "--no-hardlinks",
            source,
            &dir_str,
        ],
        stop,
    )?;
    // Branches of the source are remote-tracking refs in the clone; try both spellings.
    let candidates = [
        format!("{reference}^{{commit}}"),
        format!("origin/{reference}^{{commit}}"),
    ];
    let commit = candidates
        .iter()
        .find_map(|c| git_with(&dir, &["rev-parse", "--verify", "--quiet", c], stop).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| RecipeError::Git {
            dir: dir.clone(),
            command: format!("rev-parse {reference}"),
            message: format!("`{reference}` is not a branch, tag or commit of {source}"),
        })?;
    git_with(
        &dir,
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "--detach",
            &commit,
        ],
        stop,
    )?;
    checkout.commit = commit;
    Ok(checkout)
}

/// Keeps a local mirror of `source` (a path or URL git understands) at `dest`: cloned the first
/// time (`--mirror`: every branch and tag, no work tree), fetched with pruning afterwards, so
/// tags moved or removed upstream move or vanish here too.
pub fn mirror(source: &str, dest: &Path, stop: &Stop) -> Result<(), RecipeError> {
    if dest.join("HEAD").is_file() {
        // The source may have been changed in the config since the mirror was made.
        git_with(dest, &["remote", "set-url", "origin", source], stop)?;
        git_with(
            dest,
            &["fetch", "--quiet", "--prune", "--force", "origin"],
            stop,
        )?;
        return Ok(());
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| RecipeError::Io {
        path: parent.to_owned(),
        source: e,
    })?;
    let absolute = Path::new(source)
        .is_relative()
        .then(|| Path::new(source).canonicalize().ok())
        .flatten()
        .map(|p| p.to_string_lossy().into_owned());
    let source = absolute.as_deref().unwrap_or(source);
    let partial = dest.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let partial_str = partial.to_string_lossy().into_owned();
    git_with(
        parent,
        &["clone", "--quiet", "--mirror", source, &partial_str],
        stop,
    )?;
    // A clone cut short never passes for a mirror.
    std::fs::rename(&partial, dest).map_err(|e| RecipeError::Io {
        path: dest.to_owned(),
        source: e,
    })
}

/// The message of an annotated tag (empty for a lightweight one).
pub fn tag_message(dir: &Path, tag: &str) -> Result<String, RecipeError> {
    let out = git(
        dir,
        &[
            "for-each-ref",
            &format!("refs/tags/{tag}"),
            "--format=%(contents)",
        ],
    )?;
    Ok(out.trim().to_owned())
}

/// A file's text at a commit (`None` when the commit has no such file).
pub fn file_at(dir: &Path, commit: &str, path: &str) -> Option<String> {
    git(dir, &["show", &format!("{commit}:{path}")]).ok()
}

/// The release notes of `version`: `release/<version>` or `releaseNotes/<version>.md`.
pub fn release_notes(recipe_dir: &Path, version: &str) -> Option<String> {
    [
        recipe_dir.join("release").join(version),
        recipe_dir
            .join("releaseNotes")
            .join(format!("{version}.md")),
    ]
    .iter()
    .find_map(|p| {
        let p =
            crate::recipe::inside_recipe(recipe_dir, p.strip_prefix(recipe_dir).ok()?.to_str()?)
                .ok()?;
        std::fs::read_to_string(p).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_semver_part() {
        let a = Version::parse_tag("1.10.0+x", "a").expect("parses");
        let b = Version::parse_tag("1.9.0+y", "b").expect("parses");
        let c = Version::parse_tag("1.9.0+z", "c").expect("parses");
        assert_eq!(a.cmp_release(&b), Ordering::Greater);
        assert_eq!(
            b.cmp_release(&c),
            Ordering::Equal,
            "upstream part does not order"
        );
        assert_eq!(a.upstream.as_deref(), Some("x"));
        assert!(Version::parse_tag("v1.0.0", "x").is_none());
        assert!(Version::parse_tag("latest", "x").is_none());
    }

    #[test]
    fn previous_release_for_a_ref() {
        let v = Versions {
            releases: vec![
                Version::parse_tag("1.0.0+1", "c1").expect("v"),
                Version::parse_tag("1.9.0+1", "c2").expect("v"),
                Version::parse_tag("1.10.0+2", "c3").expect("v"),
            ],
            ..Versions::default()
        };
        assert_eq!(
            v.previous_for("c3").map(|v| v.tag.as_str()),
            Some("1.9.0+1")
        );
        assert_eq!(
            v.previous_for("c2").map(|v| v.tag.as_str()),
            Some("1.0.0+1")
        );
        assert_eq!(
            v.previous_for("c1"),
            None,
            "the first release has no previous one"
        );
        assert_eq!(
            v.previous_for("untagged").map(|v| v.tag.as_str()),
            Some("1.10.0+2"),
            "an untagged change upgrades from the highest release"
        );
    }
}
