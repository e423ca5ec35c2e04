//! Whose recipe a trial runs: the maintainer's own (local CLI: trusted) or someone else's (a pull
//! request, an API caller: untrusted), and what an untrusted recipe is refused before anything
//! is deployed.

use std::path::Path;

use seatrial_recipe::ResolvedApp;
use seatrial_recipe::policy::{self, Permit};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The person running the trial wrote or read the recipe (`seatrial test`): no policy.
    Local,
    /// Content from someone else: host access is refused unless `permit` covers it.
    Untrusted { permit: Vec<Permit> },
}

impl Trust {
    /// Refuses an untrusted recipe's host access that `permit` does not cover, with one line
    /// naming each finding, the revision, and the permit entries that would allow them.
    pub fn check(
        &self,
        recipe_dir: &Path,
        app: &ResolvedApp,
        revision: &str,
    ) -> Result<(), String> {
        let Trust::Untrusted { permit } = self else {
            return Ok(());
        };
        let found = policy::check(&app.compose, recipe_dir);
        let refused = policy::refused(&found, permit);
        if refused.is_empty() {
            return Ok(());
        }
        let what: Vec<String> = refused.iter().map(ToString::to_string).collect();
        let mut entries: Vec<String> = Vec::new();
        for v in &refused {
            let entry = format!("\"{}\"", v.permit());
            if !entries.contains(&entry) {
                entries.push(entry);
            }
        }
        Err(format!(
            "refused: {revision} of this untrusted recipe (a pull request or API run) reaches into the host: {}. If it must, the operator permits it: add {} to `permit` of the repository's [[repos]] entry in seatrial serve's config (`api_permit` for API runs; `--permit` of seatrial test --untrusted)",
            what.join("; "),
            entries.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(dir: &Path, compose: &str) -> ResolvedApp {
        std::fs::create_dir_all(dir).expect("dir");
        std::fs::write(dir.join("compose.yml"), compose).expect("write");
        let recipe = seatrial_recipe::Recipe::open(dir).expect("open");
        recipe
            .resolve(&seatrial_recipe::AppSettings {
                stack: "t-1".into(),
                ..Default::default()
            })
            .expect("resolve")
    }

    #[test]
    fn untrusted_recipes_are_refused_unless_permitted_local_ones_never() {
        let dir = std::env::temp_dir().join(format!("seatrial-trust-{}", std::process::id()));
        let app = app(
            &dir,
            "services:\n  proxy:\n    image: traefik:3\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock:ro\n",
        );
        assert_eq!(Trust::Local.check(&dir, &app, "the change"), Ok(()));
        let untrusted = Trust::Untrusted { permit: Vec::new() };
        let err = untrusted
            .check(&dir, &app, "the change")
            .expect_err("refused");
        assert!(
            err.contains("services.proxy.volumes[0]")
                && err.contains("[docker-socket]")
                && err.contains("add \"docker-socket\" to `permit`")
                && !err.contains('\n'),
            "{err}"
        );
        let permitted = Trust::Untrusted {
            permit: vec!["docker-socket".parse().expect("permit")],
        };
        assert_eq!(permitted.check(&dir, &app, "the change"), Ok(()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
