//! Where a recipe comes from: a directory as it is, or an isolated git checkout at a ref.

use std::path::{Path, PathBuf};

use seatrial_recipe::git::{self, Checkout};

use crate::exit::{self, Failure};

/// A recipe ready to read, with what is known about its revision.
pub struct Source {
    pub dir: PathBuf,
    /// The recipe's name as its source gives it (directory or repository name).
    pub name: String,
    /// The commit, when the recipe is in git.
    pub commit: Option<String>,
    /// Uncommitted changes in the maintainer's tree (never for checkouts).
    pub dirty: bool,
    /// The release tag at `commit`, when there is one and the tree is clean.
    pub version: Option<String>,
    /// Keeps the checkout alive while the recipe is used; removed on drop.
    _checkout: Option<Checkout>,
}

fn looks_remote(s: &str) -> bool {
    s.contains("://") || s.starts_with("git@") || s.ends_with(".git")
}

impl Source {
    /// Opens `recipe` (a directory, a git URL, or a repository path) at `reference`. With a
    /// reference, or for a URL, the recipe is cloned into its own directory under the data
    /// directory: the maintainer's working tree is never touched.
    pub fn open(recipe: &str, reference: Option<&str>) -> Result<Self, Failure> {
        let path = Path::new(recipe);
        let bad = |m: String| Failure::new(exit::BAD_INPUT, m);
        if reference.is_none() && path.is_dir() {
            let (commit, dirty) = if git::is_repo(path) {
                let (c, d) = git::head(path).map_err(|e| bad(e.to_string()))?;
                (Some(c), d)
            } else {
                (None, false)
            };
            let version = match (&commit, dirty) {
                (Some(c), false) if git::is_toplevel(path) => release_at(path, c),
                _ => None,
            };
            return Ok(Self {
                name: source_name(recipe),
                dir: path.to_owned(),
                commit,
                dirty,
                version,
                _checkout: None,
            });
        }
        if reference.is_none() && !looks_remote(recipe) {
            return Err(bad(format!(
                "recipe `{recipe}` is not a directory (nor a git URL); give a recipe directory, or a repository with --ref"
            )));
        }
        let work = crate::secrets::data_dir().join("checkouts");
        let checkout = git::checkout(recipe, reference.unwrap_or("HEAD"), &work)
            .map_err(|e| bad(e.to_string()))?;
        let version = release_at(&checkout.dir, &checkout.commit);
        Ok(Self {
            name: source_name(recipe),
            dir: checkout.dir.clone(),
            commit: Some(checkout.commit.clone()),
            dirty: false,
            version,
            _checkout: Some(checkout),
        })
    }
}

/// `…/recipes/coop-hello.git` → `coop-hello`.
fn source_name(source: &str) -> String {
    let trimmed = source.trim_end_matches('/');
    let base = trimmed.rsplit(['/', ':']).next().unwrap_or(trimmed);
    let base = base.strip_suffix(".git").unwrap_or(base);
    if base.is_empty() || base == "." {
        std::fs::canonicalize(source)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "recipe".to_owned())
    } else {
        base.to_owned()
    }
}

fn release_at(dir: &Path, commit: &str) -> Option<String> {
    git::versions(dir).ok()?.at(commit).map(|v| v.tag.clone())
}
