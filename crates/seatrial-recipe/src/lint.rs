//! `seatrial lint`: rules in the spirit of abra's R001–R016, each with an id, a severity, where,
//! and how to fix it. Error-severity findings make `seatrial lint` exit 1.

use serde::Serialize;

use crate::compose::ComposeFile;
use crate::recipe::{AppSettings, Recipe, RecipeKind};
use crate::validate::Severity;
use crate::{RecipeError, git};

/// Stack name length R004 assumes: Co-op Cloud derives stack names from domains
/// (`myapp_coop_example_org`), so 24 characters is a realistic, not a generous, value.
pub const REALISTIC_STACK_LEN: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LintFinding {
    pub rule: &'static str,
    pub severity: Severity,
    pub what: String,
    #[serde(rename = "where")]
    pub at: String,
    pub fix: String,
    /// The `COMPOSE_FILE` combinations the finding was seen in, when it is about the resolved
    /// compose (each overlay the recipe offers is linted together with its base file).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub combinations: Vec<String>,
}

/// The rules, for `seatrial lint --help` and the docs.
pub const RULES: &[(&str, &str)] = &[
    (
        "R001",
        "compose files parse and interpolate with the sample env",
    ),
    (
        "R002",
        "every service has an image with a pinned tag (not `latest`, not missing)",
    ),
    ("R003", "every service has a healthcheck"),
    (
        "R004",
        "secret and config names fit 64 characters for a realistic stack name",
    ),
    ("R005", "a Co-op Cloud recipe has an .env.sample"),
    ("R006", "versions are annotated tags <semver>+<upstream>"),
    (
        "R007",
        "configs and secrets a recipe ships exist in the recipe",
    ),
    (
        "R008",
        "traefik router and service labels are named after the stack",
    ),
    ("R009", "compose keys are known and variables are set"),
];

fn finding(
    rule: &'static str,
    severity: Severity,
    what: String,
    at: String,
    fix: &str,
) -> LintFinding {
    LintFinding {
        rule,
        severity,
        what,
        at,
        fix: fix.to_owned(),
        combinations: Vec::new(),
    }
}

/// Lints the recipe in `dir` (a directory, possibly a git work tree) with its sample env.
pub fn lint(dir: &std::path::Path) -> Result<Vec<LintFinding>, RecipeError> {
    lint_with(dir, &indexmap::IndexMap::new())
}

/// The `COMPOSE_FILE` values to lint: the app env's own, then the base file with each overlay
/// the recipe offers (a `compose.*.yml` file, or an entry of a commented-out `COMPOSE_FILE`
/// line of `.env.sample`) that the first does not already include.
pub fn combinations(recipe: &Recipe, env: &indexmap::IndexMap<String, String>) -> Vec<String> {
    let default = recipe
        .compose_files(env)
        .map(|files| {
            files
                .iter()
                .map(|f| {
                    f.strip_prefix(&recipe.dir)
                        .unwrap_or(f)
                        .display()
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_else(|_| {
            // Keep the broken value: resolving it reports what is wrong with it.
            env.get("COMPOSE_FILE")
                .map(|v| vec![v.clone()])
                .unwrap_or_default()
        });
    let base = default
        .first()
        .cloned()
        .unwrap_or_else(|| "compose.yml".into());
    let mut offered: Vec<String> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&recipe.dir) {
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.starts_with("compose.")
                    && (n.ends_with(".yml") || n.ends_with(".yaml"))
                    && n.matches('.').count() >= 2
            })
            .collect();
        names.sort();
        offered.extend(names);
    }
    if let Ok(text) = std::fs::read_to_string(recipe.dir.join(".env.sample")) {
        for line in text.lines() {
            let Some(rest) = line.trim_start().strip_prefix('#') else {
                continue;
            };
            let rest = rest.trim_start();
            let rest = rest.strip_prefix("export ").unwrap_or(rest).trim_start();
            let Some(value) = rest.strip_prefix("COMPOSE_FILE=") else {
                continue;
            };
            let value = value.split(" #").next().unwrap_or(value);
            for entry in value.trim().trim_matches(['"', '\'']).split(':') {
                let entry = entry.trim();
                if !entry.is_empty() && !entry.contains('$') && !offered.iter().any(|o| o == entry)
                {
                    offered.push(entry.to_owned());
                }
            }
        }
    }
    let mut out = vec![default.join(":")];
    for overlay in offered {
        if overlay != base && !default.contains(&overlay) {
            out.push(format!("{base}:{overlay}"));
        }
    }
    out
}

/// [`lint`] with `overrides` of the app env (`--env`). Unless `COMPOSE_FILE` is overridden,
/// every overlay the recipe offers is linted together with the base compose file; findings
/// about the resolved compose say in which combinations they were seen.
pub fn lint_with(
    dir: &std::path::Path,
    overrides: &indexmap::IndexMap<String, String>,
) -> Result<Vec<LintFinding>, RecipeError> {
    use Severity::{Error, Warning};
    let recipe = Recipe::open(dir)?;
    let mut out = Vec::new();
    let stack = "s".repeat(REALISTIC_STACK_LEN);

    // R005: a recipe that looks like Co-op Cloud must ship its env template.
    if recipe.kind == RecipeKind::Compose {
        let coop_signs = recipe.dir.join("abra.sh").is_file()
            || std::fs::read_dir(&recipe.dir)
                .map(|d| {
                    d.filter_map(Result::ok).any(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.starts_with("compose.") && n.ends_with(".yml") && n != "compose.yml"
                    })
                })
                .unwrap_or(false);
        if coop_signs {
            out.push(finding(
                "R005",
                Error,
                "the recipe has Co-op Cloud overlays or abra.sh but no .env.sample".into(),
                ".env.sample".into(),
                "add .env.sample with TYPE=, DOMAIN=, COMPOSE_FILE= and SECRET_*_VERSION= lines",
            ));
        }
    }

    let mut settings = AppSettings {
        stack: stack.clone(),
        domain: Some("lint.example.org".into()),
        overrides: overrides.clone(),
        ..AppSettings::default()
    };
    let combos = if overrides.contains_key("COMPOSE_FILE") {
        vec![overrides["COMPOSE_FILE"].clone()]
    } else {
        combinations(&recipe, &recipe.app_env(&settings))
    };
    let mut resolved_findings: Vec<LintFinding> = Vec::new();
    for combo in &combos {
        settings
            .overrides
            .insert("COMPOSE_FILE".into(), combo.clone());
        let mut found = Vec::new();
        match recipe.render(&settings) {
            Ok(app) => {
                for f in &app.findings {
                    // Deploy-time errors (undefined references, missing versions) are R001.
                    let rule = if f.severity == Error { "R001" } else { "R009" };
                    found.push(finding(
                        rule,
                        f.severity,
                        f.message.clone(),
                        f.at.clone(),
                        &f.hint,
                    ));
                }
                check_compose(&app.compose, &stack, &recipe, &mut found);
            }
            Err(RecipeError::Invalid { findings, path }) => {
                for f in findings {
                    found.push(finding(
                        "R001",
                        Error,
                        f.message,
                        format!("{}: {}", path.display(), f.at),
                        &f.hint,
                    ));
                }
            }
            Err(e) => found.push(finding(
                "R001",
                Error,
                e.to_string(),
                recipe.dir.display().to_string(),
                "fix the compose files or the sample env so the recipe resolves",
            )),
        }
        for mut f in found {
            match resolved_findings
                .iter_mut()
                .find(|g| g.rule == f.rule && g.what == f.what && g.at == f.at)
            {
                Some(g) => g.combinations.push(combo.clone()),
                None => {
                    f.combinations.push(combo.clone());
                    resolved_findings.push(f);
                }
            }
        }
    }
    out.extend(resolved_findings);

    // R006: versions.
    // Only a recipe at the top of its repository owns the tags.
    if git::is_toplevel(&recipe.dir) {
        let versions = git::versions(&recipe.dir)?;
        for tag in &versions.lightweight {
            out.push(finding(
                "R006",
                Error,
                format!("tag `{tag}` is a lightweight tag; it is ignored as a version"),
                format!("git tag {tag}"),
                "recreate it annotated: git tag -d TAG && git tag -a TAG -m 'release TAG' COMMIT",
            ));
        }
        for tag in &versions.other_tags {
            out.push(finding(
                "R006",
                Warning,
                format!(
                    "annotated tag `{tag}` is not a version <semver>+<upstream>; it is ignored"
                ),
                format!("git tag {tag}"),
                "name release tags like 1.2.0+3.4.5",
            ));
        }
        for v in &versions.releases {
            if v.upstream.is_none() {
                out.push(finding(
                    "R006",
                    Warning,
                    format!("version `{}` has no +<upstream> part", v.tag),
                    format!("git tag {}", v.tag),
                    "name release tags <recipe-semver>+<upstream-version>",
                ));
            }
        }
    }
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.rule.cmp(b.rule)));
    Ok(out)
}

fn check_compose(c: &ComposeFile, stack: &str, recipe: &Recipe, out: &mut Vec<LintFinding>) {
    use Severity::{Error, Warning};
    for (name, svc) in &c.services {
        let at = format!("services.{name}.image");
        if let Some(image) = &svc.image {
            let (without_digest, digest) = match image.split_once('@') {
                Some((i, _)) => (i, true),
                None => (image.as_str(), false),
            };
            let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
            let tag = last.split_once(':').map(|(_, t)| t);
            match (tag, digest) {
                (_, true) => {}
                (None, false) => out.push(finding(
                    "R002",
                    Error,
                    format!(
                        "service `{name}` uses image `{image}` without a tag (that means `latest`)"
                    ),
                    at,
                    "pin a version tag, e.g. image:1.2.3",
                )),
                (Some("latest"), false) => out.push(finding(
                    "R002",
                    Error,
                    format!("service `{name}` uses image `{image}`: `latest` changes under you"),
                    at,
                    "pin a version tag, e.g. image:1.2.3",
                )),
                _ => {}
            }
        }
        if svc.healthcheck.as_ref().is_none_or(|h| h.disables()) {
            out.push(finding(
                "R003",
                Warning,
                format!("service `{name}` has no healthcheck in the recipe"),
                format!("services.{name}.healthcheck"),
                "add one, unless the image defines a HEALTHCHECK (seatrial waits for it either way)",
            ));
        }
    }
    for f in crate::naming::guard_names(c, stack) {
        out.push(finding(
            "R004",
            Error,
            format!(
                "{} (with a {}-character stack name)",
                f.message, REALISTIC_STACK_LEN
            ),
            f.at,
            "shorten the secret/config name or its version suffix",
        ));
    }
    for (key, cfg) in &c.configs {
        if let Some(file) = &cfg.file
            && let Err(reason) =
                crate::recipe::inside_recipe(&recipe.dir, file.trim_start_matches("./"))
        {
            out.push(finding(
                "R007",
                Error,
                format!("config `{key}` reads `{file}`, which {reason}"),
                format!("configs.{key}.file"),
                "add the file to the recipe or fix the path",
            ));
        }
    }
    for (key, s) in &c.secrets {
        if let Some(file) = &s.file
            && let Err(reason) =
                crate::recipe::inside_recipe(&recipe.dir, file.trim_start_matches("./"))
        {
            out.push(finding(
                "R007",
                Error,
                format!("secret `{key}` reads `{file}`, which {reason}"),
                format!("secrets.{key}.file"),
                "add the file to the recipe, or make the secret external and versioned",
            ));
        }
    }
    // R008: traefik names must derive from the stack, or two apps of the recipe collide.
    // One finding per router/service/middleware, not per label. The proxy's own objects
    // (a service running traefik, or a router to traefik's internal api@internal) are exempt.
    for (name, svc) in &c.services {
        let Some(deploy) = &svc.deploy else { continue };
        let runs_traefik = svc.image.as_deref().is_some_and(|image| {
            let repo = image.split(['@', ':']).next().unwrap_or(image);
            repo.rsplit('/').next() == Some("traefik")
        });
        if runs_traefik {
            continue;
        }
        let mut seen: Vec<(String, String)> = Vec::new();
        for key in deploy.labels.keys() {
            let parts: Vec<&str> = key.split('.').collect();
            let [
                "traefik",
                proto @ ("http" | "tcp" | "udp"),
                kind @ ("routers" | "services" | "middlewares"),
                object,
                ..,
            ] = parts.as_slice()
            else {
                continue;
            };
            if object.contains(stack) || seen.iter().any(|(k, o)| k == kind && o == object) {
                continue;
            }
            seen.push(((*kind).to_owned(), (*object).to_owned()));
            let internal = *kind == "routers"
                && deploy
                    .labels
                    .get(&format!("traefik.{proto}.routers.{object}.service"))
                    .is_some_and(|s| s.ends_with("@internal"));
            if internal {
                continue;
            }
            out.push(finding(
                "R008",
                Error,
                format!(
                    "service `{name}` names a traefik {} `{object}` that does not contain the stack name",
                    kind.trim_end_matches('s')
                ),
                format!("services.{name}.deploy.labels.traefik.{proto}.{kind}.{object}"),
                "name it ${STACK_NAME} (or ${STACK_NAME}-something) so apps of this recipe do not collide",
            ));
        }
    }
}
