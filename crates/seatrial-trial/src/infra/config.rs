//! `[[infra]]` entries of the config file: which apps are kept current, from which recipe, how
//! large a step may be applied unattended, and what holds a release back.
//!
//! ```toml
//! [[infra]]
//! name = "traefik"                 # the stack name
//! recipe = "https://git.example.org/coop-cloud/traefik.git"   # git URL or path
//! policy = "minor"                 # patch | minor | major: the largest step applied unattended
//! domain = "traefik.example.org"   # optional (default: <name>.localhost)
//! hold_patterns = ["(?i)manual", "(?i)migrat", "(?i)breaking"]   # these are the defaults
//! timeout = "10m"                  # the post-deploy gate: converged and serving within this
//! env = { LETS_ENCRYPT_ENV = "production" }
//! probe = { path = "/ping", status = "200" }   # as [probe] in tests/seatrial.toml
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::{Overrides, ProbeSection};

/// The largest step a release may take from the deployed one and still be applied unattended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Patch,
    #[default]
    Minor,
    Major,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Patch => "patch",
            Policy::Minor => "minor",
            Policy::Major => "major",
        }
    }

    /// The step from `from` to a newer `to`, as semver means it: below 1.0.0 a minor change
    /// is a major step (`0.3` → `0.4` may break), as Cargo reads versions.
    pub fn step(from: &semver::Version, to: &semver::Version) -> Policy {
        if to.major != from.major || (from.major == 0 && to.minor != from.minor) {
            Policy::Major
        } else if to.minor != from.minor {
            Policy::Minor
        } else {
            Policy::Patch
        }
    }

    /// Whether this policy applies the step from `from` to `to` unattended.
    pub fn allows(self, from: &semver::Version, to: &semver::Version) -> bool {
        Policy::step(from, to) <= self
    }
}

/// The default `hold_patterns`: release notes that ask for a human.
pub const DEFAULT_HOLD_PATTERNS: [&str; 3] = ["(?i)manual", "(?i)migrat", "(?i)breaking"];

/// The default post-deploy gate: converged and serving within ten minutes.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(600);

/// One infra app.
#[derive(Debug, Clone)]
pub struct InfraApp {
    /// The stack name.
    pub name: String,
    /// A git URL or a path to the recipe's repository.
    pub recipe: String,
    pub policy: Policy,
    /// `None`: `<name>.localhost`.
    pub domain: Option<String>,
    pub hold_patterns: Vec<regex::Regex>,
    /// Converged and serving within this, or the release is rolled back.
    pub health_timeout: Duration,
    /// App env overrides and probe settings (over the recipe's `tests/seatrial.toml`).
    pub overrides: Overrides,
}

impl InfraApp {
    pub fn domain(&self) -> String {
        self.domain
            .clone()
            .unwrap_or_else(|| format!("{}.localhost", self.name))
    }
}

/// An `[[infra]]` entry as the file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    recipe: String,
    #[serde(default)]
    policy: Policy,
    domain: Option<String>,
    hold_patterns: Option<Vec<String>>,
    timeout: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    probe: Option<ProbeSection>,
}

/// The parts of the config file reconcile reads; everything else belongs to `serve`.
#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    infra: Vec<toml::Value>,
}

/// Reads the `[[infra]]` entries of a config file's text. Errors name the entry and its key.
pub fn parse(text: &str) -> Result<Vec<InfraApp>, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    parse_entries(file.infra)
}

/// Checks `[[infra]]` entries (as TOML values, e.g. from a larger config file).
pub fn parse_entries(entries: Vec<toml::Value>) -> Result<Vec<InfraApp>, String> {
    let mut apps: Vec<InfraApp> = Vec::new();
    for (i, value) in entries.into_iter().enumerate() {
        let entry: Entry = value
            .try_into()
            .map_err(|e: toml::de::Error| format!("[[infra]] entry {}: {}", i + 1, e.message()))?;
        let at = format!("[[infra]] {}", entry.name);
        seatrial_recipe::naming::check_stack_name(&entry.name)
            .map_err(|e| format!("[[infra]] entry {}: name: {e}", i + 1))?;
        if apps.iter().any(|a| a.name == entry.name) {
            return Err(format!(
                "{at}: the name is used by another [[infra]] entry; each stack is kept by one entry"
            ));
        }
        if entry.recipe.trim().is_empty() {
            return Err(format!("{at}: recipe is empty; give a git URL or a path"));
        }
        let patterns = entry.hold_patterns.unwrap_or_else(|| {
            DEFAULT_HOLD_PATTERNS
                .iter()
                .map(|p| (*p).to_owned())
                .collect()
        });
        let hold_patterns = patterns
            .iter()
            .map(|p| {
                regex::Regex::new(p).map_err(|e| {
                    format!("{at}: hold_patterns: {p:?} is not a regular expression: {e}")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let health_timeout = match entry.timeout {
            None => DEFAULT_HEALTH_TIMEOUT,
            Some(t) => seatrial_recipe::parse_duration(&t)
                .map_err(|e| format!("{at}: timeout = {t:?}: {e}"))?,
        };
        let mut overrides = match entry.probe {
            Some(p) => p.overrides(&format!("{at}: probe"))?,
            None => Overrides::default(),
        };
        overrides.env = entry.env.into_iter().collect();
        crate::settings::Settings::default()
            .apply(&overrides)
            .check()
            .map_err(|e| format!("{at}: {e}"))?;
        apps.push(InfraApp {
            name: entry.name,
            recipe: entry.recipe,
            policy: entry.policy,
            domain: entry.domain,
            hold_patterns,
            health_timeout,
            overrides,
        });
    }
    Ok(apps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).expect("version")
    }

    #[test]
    fn steps_follow_semver() {
        assert_eq!(Policy::step(&v("1.2.3"), &v("1.2.4")), Policy::Patch);
        assert_eq!(Policy::step(&v("1.2.3"), &v("1.3.0")), Policy::Minor);
        assert_eq!(Policy::step(&v("1.2.3"), &v("2.0.0")), Policy::Major);
        assert_eq!(Policy::step(&v("0.3.1"), &v("0.4.0")), Policy::Major);
        assert_eq!(Policy::step(&v("0.3.1"), &v("0.3.2")), Policy::Patch);
        assert!(Policy::Minor.allows(&v("1.0.0+a"), &v("1.4.0+b")));
        assert!(!Policy::Minor.allows(&v("1.9.0"), &v("2.0.0")));
        assert!(!Policy::Patch.allows(&v("1.0.0"), &v("1.1.0")));
        assert!(Policy::Major.allows(&v("1.0.0"), &v("3.0.0")));
    }

    #[test]
    fn entries_parse_with_defaults_and_errors_name_the_entry() {
        let apps = parse(
            r#"
listen = "127.0.0.1:8086"
[[infra]]
name = "traefik"
recipe = "https://git.example.org/coop-cloud/traefik.git"
[[infra]]
name = "sso"
recipe = "/srv/recipes/keycloak"
policy = "patch"
timeout = "3m"
env = { ADMIN = "me" }
probe = { path = "/health", status = "200" }
"#,
        )
        .expect("parses");
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[0].policy, Policy::Minor);
        assert_eq!(apps[0].hold_patterns.len(), 3);
        assert!(apps[0].hold_patterns[1].is_match("Needs a MIGRATION"));
        assert_eq!(apps[0].domain(), "traefik.localhost");
        assert_eq!(apps[1].health_timeout, Duration::from_secs(180));
        assert_eq!(apps[1].overrides.path.as_deref(), Some("/health"));
        assert_eq!(apps[1].overrides.env, vec![("ADMIN".into(), "me".into())]);

        for (text, says) in [
            (
                "[[infra]]\nname = \"a\"\nrecipe = \"x\"\npolicy = \"huge\"\n",
                "entry 1",
            ),
            (
                "[[infra]]\nname = \"a\"\nrecipe = \"x\"\nhold_patterns = [\"(\"]\n",
                "[[infra]] a: hold_patterns",
            ),
            (
                "[[infra]]\nname = \"a\"\nrecipe = \"x\"\n[[infra]]\nname = \"a\"\nrecipe = \"y\"\n",
                "used by another",
            ),
            (
                "[[infra]]\nname = \"a\"\nrecipe = \"x\"\ntimeout = \"soon\"\n",
                "[[infra]] a: timeout",
            ),
            (
                "[[infra]]\nname = \"a\"\nrecipe = \"x\"\nprobe = { status = \"999\" }\n",
                "[[infra]] a: probe.status",
            ),
            (
                "[[infra]]\nname = \"a\"\nrecipe = \"x\"\ncolour = 1\n",
                "colour",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
