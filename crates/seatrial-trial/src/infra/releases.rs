//! The recipe side of reconcile: seatrial's own mirror of the recipe repository, its releases
//! and their notes, and the pre-deploy gate that picks (or holds) the target release.

use std::path::{Path, PathBuf};

use seatrial_recipe::git::{self, Version, Versions};

use super::config::{InfraApp, Policy};
use super::state::{InfraDir, Release};

/// The recipe's repository as mirrored now, and its releases.
pub(crate) struct Catalog {
    pub(crate) repo: PathBuf,
    pub(crate) versions: Versions,
}

/// Brings the mirror of the app's recipe up to date and reads its releases.
pub(crate) fn sync(app: &InfraApp, dir: &InfraDir, stop: &git::Stop) -> Result<Catalog, String> {
    let repo = dir.mirror_path(&app.name);
    git::mirror(&app.recipe, &repo, stop).map_err(|e| {
        format!(
            "cannot fetch the recipe {} into {}: {e}",
            app.recipe,
            repo.display()
        )
    })?;
    let versions = git::versions(&repo).map_err(|e| e.to_string())?;
    Ok(Catalog { repo, versions })
}

/// A release's notes: `release/<version>` (or `releaseNotes/<version>.md`) at its commit, then
/// the tag's message.
pub(crate) fn notes(repo: &Path, v: &Version) -> String {
    let mut parts = Vec::new();
    for path in [
        format!("release/{}", v.tag),
        format!("releaseNotes/{}.md", v.tag),
    ] {
        if let Some(text) = git::file_at(repo, &v.commit, &path) {
            parts.push(text.trim().to_owned());
            break;
        }
    }
    if let Ok(message) = git::tag_message(repo, &v.tag)
        && !message.is_empty()
    {
        parts.push(message);
    }
    parts.join("\n\n")
}

/// What the pre-deploy gate decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Nothing deployed: deploy `to`. `base`: the last-good release whose data the volumes may
    /// hold (snapshotted first, as for an upgrade).
    Install {
        base: Option<Release>,
        to: Version,
        reason: String,
    },
    Upgrade {
        to: Version,
        reason: String,
    },
    /// At the newest release the gate lets through.
    Skip {
        reason: String,
    },
    /// A newer release waits for a human. `key` identifies the situation (one alert per key).
    Hold {
        to: Version,
        reason: String,
        notes: Option<String>,
        key: String,
    },
}

/// Picks what to do about an app deployed at `current` (`None`: not deployed). `failed`:
/// releases that failed their gate before (skipped unless `retry`). `notes` reads a release's
/// notes.
pub(crate) fn decide(
    app: &InfraApp,
    current: Option<&Release>,
    last_good: Option<&Release>,
    versions: &Versions,
    failed: &[String],
    retry: bool,
    notes: &dyn Fn(&Version) -> String,
) -> Result<Decision, String> {
    if versions.releases.is_empty() {
        return Err(format!(
            "the recipe {} has no releases (annotated tags like 1.2.3+4.5.6)",
            app.recipe
        ));
    }
    let usable = |v: &&Version| retry || !failed.contains(&v.tag);
    let Some(base) = current.or(last_good) else {
        let to = versions
            .releases
            .iter()
            .filter(usable)
            .max_by(|a, b| a.cmp_release(b))
            .ok_or_else(|| {
                format!(
                    "every release of {} failed its gate before; give --retry {} to try again",
                    app.recipe, app.name
                )
            })?;
        return Ok(Decision::Install {
            base: None,
            to: to.clone(),
            reason: format!("not deployed: installing the newest release {}", to.tag),
        });
    };
    let at = Version::parse_tag(&base.version, &base.commit).ok_or_else(|| {
        format!(
            "the deployed version `{}` is not a release version (<semver>+<upstream>); deploy a release of {} first",
            base.version, app.recipe
        )
    })?;
    let decision = gate(app, &at, versions, failed, retry, notes);
    if current.is_some() {
        return Ok(decision);
    }
    // Not deployed, but it was: its data may still be there, so it comes back at last-good or
    // at what the gate lets through from there.
    let last = versions
        .releases
        .iter()
        .find(|v| v.tag == base.version)
        .cloned()
        .unwrap_or(at);
    Ok(match decision {
        Decision::Upgrade { to, reason } => Decision::Install {
            base: Some(base.clone()),
            to,
            reason: format!("not deployed (last-good {}): {reason}", base.version),
        },
        Decision::Skip { .. } => Decision::Install {
            base: Some(base.clone()),
            reason: format!("not deployed: reinstalling last-good {}", last.tag),
            to: last,
        },
        Decision::Hold { reason, .. } => Decision::Install {
            base: Some(base.clone()),
            reason: format!(
                "not deployed: reinstalling last-good {}; {reason}",
                last.tag
            ),
            to: last,
        },
        install @ Decision::Install { .. } => install,
    })
}

/// The pre-deploy gate from release `at`: the newest release the policy allows, unless a
/// release crossed on the way asks for a human in its notes.
fn gate(
    app: &InfraApp,
    at: &Version,
    versions: &Versions,
    failed: &[String],
    retry: bool,
    notes: &dyn Fn(&Version) -> String,
) -> Decision {
    let newer: Vec<&Version> = versions
        .releases
        .iter()
        .filter(|v| v.cmp_release(at).is_gt())
        .collect();
    let candidates: Vec<&Version> = newer
        .iter()
        .copied()
        .filter(|v| retry || !failed.contains(&v.tag))
        .collect();
    if candidates.is_empty() {
        let reason = match newer.last() {
            Some(f) => format!(
                "at {}; {} failed its gate and is not tried again until a newer release exists (or --retry {})",
                at.tag, f.tag, app.name
            ),
            None => format!("at the newest release {}", at.tag),
        };
        return Decision::Skip { reason };
    }
    let newest = candidates
        .iter()
        .copied()
        .max_by(|a, b| a.cmp_release(b))
        .cloned()
        .unwrap_or_else(|| at.clone());
    let Some(to) = candidates
        .iter()
        .copied()
        .filter(|v| app.policy.allows(&at.semver, &v.semver))
        .max_by(|a, b| a.cmp_release(b))
        .cloned()
    else {
        let step = Policy::step(&at.semver, &newest.semver);
        return Decision::Hold {
            reason: format!(
                "{} is a {} step from {}; policy = \"{}\" applies at most {} steps unattended",
                newest.tag,
                step.as_str(),
                at.tag,
                app.policy.as_str(),
                app.policy.as_str()
            ),
            notes: Some(notes(&newest)).filter(|n| !n.is_empty()),
            key: format!("policy:{}", newest.tag),
            to: newest,
        };
    };
    let crossed: Vec<(&Version, String)> = newer
        .iter()
        .copied()
        .filter(|v| v.cmp_release(&to).is_le())
        .map(|v| (v, notes(v)))
        .collect();
    let flagged: Vec<String> = crossed
        .iter()
        .filter_map(|(v, text)| {
            app.hold_patterns
                .iter()
                .find(|p| p.is_match(text))
                .map(|p| format!("{} (matches {:?})", v.tag, p.as_str()))
        })
        .collect();
    if !flagged.is_empty() {
        let all: Vec<String> = crossed
            .iter()
            .map(|(v, text)| {
                format!(
                    "## {}\n{}",
                    v.tag,
                    if text.is_empty() { "(no notes)" } else { text }
                )
            })
            .collect();
        return Decision::Hold {
            reason: format!(
                "the release notes of {} ask for a human; upgrade by hand, then reconcile records it",
                flagged.join(", ")
            ),
            notes: Some(all.join("\n\n")),
            key: format!("notes:{}", to.tag),
            to,
        };
    }
    let mut reason = format!(
        "{} → {} ({} step)",
        at.tag,
        to.tag,
        Policy::step(&at.semver, &to.semver).as_str()
    );
    if newest.cmp_release(&to).is_gt() {
        reason.push_str(&format!(
            "; {} is beyond policy = \"{}\" and waits for a human",
            newest.tag,
            app.policy.as_str()
        ));
    }
    Decision::Upgrade { to, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::config::parse;

    fn app(policy: &str) -> InfraApp {
        parse(&format!(
            "[[infra]]\nname = \"proxy\"\nrecipe = \"/r\"\npolicy = \"{policy}\"\n"
        ))
        .expect("config")
        .remove(0)
    }

    fn versions(tags: &[&str]) -> Versions {
        Versions {
            releases: tags
                .iter()
                .map(|t| Version::parse_tag(t, &format!("c-{t}")).expect("tag"))
                .collect(),
            ..Versions::default()
        }
    }

    fn at(tag: &str) -> Release {
        Release {
            version: tag.into(),
            commit: format!("c-{tag}"),
        }
    }

    fn no_notes(_: &Version) -> String {
        String::new()
    }

    #[test]
    fn picks_the_newest_release_the_policy_allows() {
        let v = versions(&["1.0.0+1", "1.0.1+1", "1.1.0+1", "2.0.0+1"]);
        let d = decide(
            &app("patch"),
            Some(&at("1.0.0+1")),
            None,
            &v,
            &[],
            false,
            &no_notes,
        )
        .expect("decides");
        let Decision::Upgrade { to, reason } = d else {
            panic!("{d:?}")
        };
        assert_eq!(to.tag, "1.0.1+1");
        assert!(reason.contains("2.0.0+1 is beyond"), "{reason}");
        let d = decide(
            &app("minor"),
            Some(&at("1.0.1+1")),
            None,
            &v,
            &[],
            false,
            &no_notes,
        )
        .expect("decides");
        assert!(
            matches!(d, Decision::Upgrade { ref to, .. } if to.tag == "1.1.0+1"),
            "{d:?}"
        );
        let d = decide(
            &app("minor"),
            Some(&at("1.1.0+1")),
            None,
            &v,
            &[],
            false,
            &no_notes,
        )
        .expect("decides");
        let Decision::Hold { key, reason, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!(key, "policy:2.0.0+1");
        assert!(reason.contains("major step"), "{reason}");
        let d = decide(
            &app("major"),
            Some(&at("2.0.0+1")),
            None,
            &v,
            &[],
            false,
            &no_notes,
        )
        .expect("decides");
        assert!(matches!(d, Decision::Skip { .. }), "{d:?}");
    }

    #[test]
    fn notes_of_any_crossed_release_hold_the_upgrade() {
        let v = versions(&["1.0.0+1", "1.0.1+1", "1.0.2+1"]);
        let notes = |r: &Version| {
            if r.tag == "1.0.1+1" {
                "Run the MIGRATION by hand before upgrading.".to_owned()
            } else {
                format!("Release {}", r.tag)
            }
        };
        let d = decide(
            &app("minor"),
            Some(&at("1.0.0+1")),
            None,
            &v,
            &[],
            false,
            &notes,
        )
        .expect("decides");
        let Decision::Hold {
            to,
            notes,
            key,
            reason,
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(to.tag, "1.0.2+1");
        assert_eq!(key, "notes:1.0.2+1");
        assert!(
            reason.contains("1.0.1+1 (matches \"(?i)migrat\")"),
            "{reason}"
        );
        let notes = notes.expect("notes");
        assert!(notes.contains("## 1.0.1+1\nRun the MIGRATION"), "{notes}");
        assert!(notes.contains("## 1.0.2+1\nRelease 1.0.2+1"), "{notes}");
    }

    #[test]
    fn failed_releases_wait_for_a_newer_one_or_retry() {
        let v = versions(&["1.0.0+1", "1.0.1+1"]);
        let failed = vec!["1.0.1+1".to_owned()];
        let d = decide(
            &app("minor"),
            Some(&at("1.0.0+1")),
            None,
            &v,
            &failed,
            false,
            &no_notes,
        )
        .expect("decides");
        let Decision::Skip { reason } = d else {
            panic!("{d:?}")
        };
        assert!(reason.contains("--retry proxy"), "{reason}");
        let d = decide(
            &app("minor"),
            Some(&at("1.0.0+1")),
            None,
            &v,
            &failed,
            true,
            &no_notes,
        )
        .expect("decides");
        assert!(matches!(d, Decision::Upgrade { ref to, .. } if to.tag == "1.0.1+1"));
        let v = versions(&["1.0.0+1", "1.0.1+1", "1.0.2+1"]);
        let d = decide(
            &app("minor"),
            Some(&at("1.0.0+1")),
            None,
            &v,
            &failed,
            false,
            &no_notes,
        )
        .expect("decides");
        assert!(matches!(d, Decision::Upgrade { ref to, .. } if to.tag == "1.0.2+1"));
    }

    #[test]
    fn not_deployed_installs_and_keeps_the_last_good_data_in_mind() {
        let v = versions(&["1.0.0+1", "1.1.0+1", "2.0.0+1"]);
        let d = decide(&app("minor"), None, None, &v, &[], false, &no_notes).expect("decides");
        assert!(
            matches!(d, Decision::Install { base: None, ref to, .. } if to.tag == "2.0.0+1"),
            "{d:?}"
        );
        let d = decide(
            &app("minor"),
            None,
            Some(&at("1.0.0+1")),
            &v,
            &[],
            false,
            &no_notes,
        )
        .expect("decides");
        assert!(
            matches!(d, Decision::Install { base: Some(_), ref to, .. } if to.tag == "1.1.0+1"),
            "{d:?}"
        );
        let e = decide(
            &app("minor"),
            None,
            None,
            &versions(&[]),
            &[],
            false,
            &no_notes,
        )
        .expect_err("no releases");
        assert!(e.contains("has no releases"), "{e}");
        let e = decide(
            &app("minor"),
            Some(&at("latest")),
            None,
            &v,
            &[],
            false,
            &no_notes,
        )
        .expect_err("not a version");
        assert!(e.contains("`latest` is not a release version"), "{e}");
    }
}
