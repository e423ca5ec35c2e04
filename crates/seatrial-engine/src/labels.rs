//! The labels seatrial puts on everything it creates, so that its janitor can find what a killed
//! run left behind — and never touches anything else.

use std::collections::HashMap;

/// Set by `docker stack deploy` and by seatrial on every member of a stack.
pub const STACK_NAMESPACE: &str = "com.docker.stack.namespace";
/// The run (trial or deploy invocation) that created or last updated the resource.
pub const RUN: &str = "io.seatrial.run";
/// The recipe the resource belongs to (its name or path).
pub const RECIPE: &str = "io.seatrial.recipe";
/// The role of the app: `app` (`seatrial app deploy`), `trial`, `canonical` or `infra`.
pub const KIND: &str = "io.seatrial.kind";
/// When the resource was first created, RFC 3339 UTC.
pub const CREATED: &str = "io.seatrial.created";
/// The recipe commit deployed (set when the recipe is a git checkout).
pub const COMMIT: &str = "io.seatrial.commit";
/// The recipe version deployed (its release tag), when the commit is a release.
pub const VERSION: &str = "io.seatrial.version";
/// The volume a snapshot helper container mounts.
pub const VOLUME: &str = "io.seatrial.volume";
/// [`KIND`] of the created-but-never-started containers that stream a volume in or out.
pub const KIND_SNAPSHOT_HELPER: &str = "snapshot-helper";
/// On a service pinned to the manager's node because it mounts a volume or host path: the
/// constraint and why (volumes are node-local; docs/cluster.md, "Volumes").
pub const PINNED: &str = "io.seatrial.pinned";
/// What a service does inside its stack, when it is not one of the recipe's own services.
pub const ROLE: &str = "io.seatrial.role";
/// [`ROLE`] of the one-shot job that probes a service from inside the swarm.
pub const ROLE_PROBE: &str = "probe";
/// `true` when the recipe had uncommitted changes at deploy time.
pub const DIRTY: &str = "io.seatrial.dirty";

/// The `io.seatrial.*` values of one deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLabels {
    pub run: String,
    pub recipe: String,
    pub kind: String,
    pub created: String,
    pub commit: Option<String>,
    pub version: Option<String>,
    pub dirty: bool,
}

impl RunLabels {
    /// Labels for a resource created now by `run`.
    pub fn new(run: impl Into<String>, recipe: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            run: run.into(),
            recipe: recipe.into(),
            kind: kind.into(),
            created: now_rfc3339(),
            commit: None,
            version: None,
            dirty: false,
        }
    }

    /// The labels for a member of `stack`: namespace plus `io.seatrial.*`.
    pub fn for_stack(&self, stack: &str) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (STACK_NAMESPACE.to_owned(), stack.to_owned()),
            (RUN.to_owned(), self.run.clone()),
            (RECIPE.to_owned(), self.recipe.clone()),
            (KIND.to_owned(), self.kind.clone()),
            (CREATED.to_owned(), self.created.clone()),
        ]);
        if let Some(commit) = &self.commit {
            labels.insert(COMMIT.to_owned(), commit.clone());
        }
        if let Some(version) = &self.version {
            labels.insert(VERSION.to_owned(), version.clone());
        }
        if self.dirty {
            labels.insert(DIRTY.to_owned(), "true".to_owned());
        }
        labels
    }
}

/// Groups the label sets of seatrial-labelled objects by stack namespace (what the janitor
/// decides on); objects outside a stack namespace are left out — seatrial never touches them.
pub(crate) fn group_by_stack(
    all: impl IntoIterator<Item = HashMap<String, String>>,
) -> Vec<crate::LabelledStack> {
    let mut stacks: std::collections::BTreeMap<String, crate::LabelledStack> = Default::default();
    for labels in all {
        let Some(stack) = labels.get(STACK_NAMESPACE) else {
            continue;
        };
        let entry = stacks
            .entry(stack.clone())
            .or_insert_with(|| crate::LabelledStack {
                stack: stack.clone(),
                runs: Vec::new(),
                kinds: Vec::new(),
                created: None,
                objects: 0,
            });
        entry.objects += 1;
        for (key, list) in [(RUN, &mut entry.runs), (KIND, &mut entry.kinds)] {
            if let Some(v) = labels.get(key)
                && !list.contains(v)
            {
                list.push(v.clone());
            }
        }
        if let Some(created) = labels.get(CREATED)
            && entry.created.as_ref().is_none_or(|c| created < c)
        {
            entry.created = Some(created.clone());
        }
    }
    stacks.into_values().collect()
}

/// The current time as RFC 3339 UTC with second precision (`2026-11-23T23:59:01Z`).
pub fn now_rfc3339() -> String {
    rfc3339(u64::try_from(jiff::Timestamp::now().as_second()).unwrap_or(0))
}

/// Unix seconds as RFC 3339 UTC (`2026-11-24T10:00:00Z`).
pub fn rfc3339(unix_secs: u64) -> String {
    let at = i64::try_from(unix_secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::MAX);
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses an RFC 3339 time (the `YYYY-MM-DDTHH:MM:SSZ` form [`now_rfc3339`] writes, or any
/// other offset) into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let at: jiff::Timestamp = s.parse().ok()?;
    u64::try_from(at.as_second()).ok()
}

#[cfg(test)]
mod tests {
    use super::{parse_rfc3339, rfc3339};

    #[test]
    fn parses_what_it_writes() {
        for t in [0, 951_782_400, 1_795_478_399, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_478_399), "2026-11-23T23:59:59Z");
    }
}
