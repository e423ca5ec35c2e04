//! Parity with Docker's stack loader: every recipe of `fixtures/recipes/parity`, in every
//! `COMPOSE_FILE` combination it offers, rendered by seatrial and by `docker stack config`,
//! compared field by field. Fails (never skips) when `docker` is missing.
//!
//! Only the normalisations and differences of [`KNOWN_DIFFERENCES`] (the README's parity table)
//! are allowed; anything else is a failure that names the recipe, the combination and the field.

use std::path::{Path, PathBuf};
use std::process::Command;

use indexmap::IndexMap;
use serde_json::Value;

use seatrial_recipe::{AppSettings, Recipe, lint, render};

/// Differences between seatrial and Docker that are deliberate: (recipe, combination, field
/// path, reason). Kept in sync with the README's parity table.
const KNOWN_DIFFERENCES: &[(&str, &str, &str, &str)] = &[
    (
        "ports",
        "compose.yml:compose.host.yml",
        "services.web.ports",
        "Docker merges ports keyed by published port, so all unpublished ports of a service \
         collapse into the last one (9100 is lost); seatrial keeps every unpublished port.",
    ),
    (
        "ports",
        "compose.yml:compose.extra.yml",
        "services.web.ports",
        "the same collapse of unpublished ports as above",
    ),
    (
        "merge",
        "compose.yml:compose.override.yml",
        "services.web.depends_on",
        "Docker appends depends_on with duplicates ([db, nothere, db, nothere]); seatrial drops \
         the duplicates. Swarm ignores depends_on either way.",
    ),
];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/recipes/parity")
}

/// What `docker stack config` prints for `files` with `env` as its whole environment.
fn docker_config(files: &[PathBuf], env: &IndexMap<String, String>) -> Result<Value, String> {
    let mut cmd = Command::new("docker");
    cmd.arg("stack").arg("config");
    for f in files {
        cmd.arg("-c").arg(f);
    }
    cmd.env_clear();
    for key in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.envs(env);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run `docker stack config` ({e}): the parity suite needs the docker CLI")
    });
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_saphyr::from_str::<Value>(&text).map_err(|e| format!("unreadable output: {e}\n{text}"))
}

/// The normalisations of the parity table: `version` is left out (Docker always prints one);
/// a port without `protocol` is tcp and without `mode` is ingress (Docker prints neither for a
/// long-syntax port that leaves them out). Map key order never matters (maps compare as maps).
fn normalise(doc: &mut Value) {
    if let Value::Object(top) = doc {
        top.remove("version");
        if let Some(Value::Object(services)) = top.get_mut("services") {
            for svc in services.values_mut() {
                if let Some(Value::Array(ports)) = svc.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert_with(|| "tcp".into());
                        p.entry("mode").or_insert_with(|| "ingress".into());
                    }
                }
            }
        }
    }
}

/// Every field where `ours` and `theirs` differ, as `path: ours != theirs`.
fn differences(path: &str, ours: &Value, theirs: &Value, out: &mut Vec<(String, String)>) {
    let child = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for k in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                differences(
                    &child(k),
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}[{i}]"), x, y, out);
            }
        }
        // Docker prints numbers of some fields as text and the other way round: compare text.
        (a, b) if scalar_text(a).is_some() && scalar_text(a) == scalar_text(b) => {}
        (a, b) if a != b => out.push((path.to_owned(), format!("seatrial {a} != docker {b}"))),
        _ => {}
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[test]
fn docker_cli_is_available() {
    let out = Command::new("docker").arg("--version").output();
    assert!(
        out.as_ref().is_ok_and(|o| o.status.success()),
        "the parity suite compares with `docker stack config`: install the docker CLI ({out:?})"
    );
}

#[test]
fn every_combination_of_the_corpus_matches_docker_stack_config() {
    let mut recipes: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("the parity corpus exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    recipes.sort();
    assert!(recipes.len() >= 5, "corpus incomplete: {recipes:?}");
    let mut failures = Vec::new();
    let mut compared = 0;
    let mut observed: Vec<usize> = Vec::new();
    for dir in &recipes {
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let recipe = Recipe::open(dir).expect("corpus recipes open");
        let refused: Vec<String> = std::fs::read_to_string(dir.join("refused"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        let mut settings = AppSettings {
            stack: "parity".into(),
            domain: Some("parity.example.org".into()),
            ..AppSettings::default()
        };
        let combos = lint::combinations(&recipe, &recipe.app_env(&settings));
        assert!(!combos.is_empty(), "{name}: no combination");
        for combo in combos {
            settings
                .overrides
                .insert("COMPOSE_FILE".into(), combo.clone());
            let env = recipe.app_env(&settings);
            let files = recipe.compose_files(&env).expect("files exist");
            let ours = recipe.render(&settings);
            let theirs = docker_config(&files, &env);
            let expect_refusal = refused.contains(&combo);
            match (ours, theirs) {
                (Err(ours), Err(theirs)) => {
                    if !expect_refusal {
                        failures.push(format!("{name} [{combo}]: both refuse, unexpectedly:\n  seatrial: {ours}\n  docker: {theirs}"));
                    }
                }
                (Ok(_), Err(theirs)) => failures.push(format!(
                    "{name} [{combo}]: docker refuses, seatrial renders: {theirs}"
                )),
                (Err(ours), Ok(_)) => failures.push(format!(
                    "{name} [{combo}]: seatrial refuses, docker renders: {ours}"
                )),
                (Ok(app), Ok(mut theirs)) => {
                    if expect_refusal {
                        failures.push(format!("{name} [{combo}]: expected a refusal"));
                    }
                    let mut ours = render::render(&app.compose, &recipe.dir);
                    normalise(&mut ours);
                    normalise(&mut theirs);
                    let mut diffs = Vec::new();
                    differences("", &ours, &theirs, &mut diffs);
                    for (path, what) in diffs {
                        let known = KNOWN_DIFFERENCES
                            .iter()
                            .position(|(r, c, p, _)| *r == name && *c == combo && *p == path);
                        if let Some(i) = known {
                            observed.push(i);
                        } else {
                            failures.push(format!("{name} [{combo}] {path}: {what}"));
                        }
                    }
                    compared += 1;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} difference(s) from docker stack config not in the parity table:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared >= 8, "only {compared} combinations compared");
    for (i, (r, c, p, _)) in KNOWN_DIFFERENCES.iter().enumerate() {
        assert!(
            observed.contains(&i),
            "the parity table lists {r} [{c}] {p}, which no longer differs: remove it"
        );
    }
}
