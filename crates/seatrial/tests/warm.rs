//! Warm canonicals, known-good snapshots and `--quick`, end to end on the real engine with the
//! slow-first-boot recipe (fixtures/recipes/slowseed-history.sh): `--promote` makes the
//! canonical; quick runs of a good and of a destructive change leave its data byte for byte as
//! it was; a kill -9 mid-run, a volume removed by hand and a corrupted snapshot are recovered
//! from or refused; `warm drop` removes it; the janitor never touches it.
//!
//! Most cases share one promoted canonical (promoting seeds an empty volume, the slow part) and
//! take turns on it; each leaves it in its known-good state. The data directory is given to
//! every command as `SEATRIAL_DATA_DIR` (the `--data-dir` setting).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use common::{Contents, differences, docker, git, listing, repo_root, wait_for};

/// How long the fixture seeds an empty volume in these tests (the benchmark uses 20 s).
const SEED_SECONDS: &str = "3";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seatrial-warm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A repository of the slowseed recipe, and the data directory its runs use.
struct Recipe {
    /// The recipe's name: the repository directory's base name.
    name: String,
    repo: PathBuf,
    data: PathBuf,
    scratch: PathBuf,
}

impl Recipe {
    /// A new repository named `wt<pid><tag>` (unique per test process and case).
    fn new(tag: &str) -> Self {
        let scratch = scratch(tag);
        let name = format!("wt{}{tag}", std::process::id());
        let repo = scratch.join(&name);
        let o = Command::new(repo_root().join("fixtures/recipes/slowseed-history.sh"))
            .arg(&repo)
            .output()
            .expect("slowseed-history.sh");
        assert!(o.status.success(), "{}", text(&o));
        let data = scratch.join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        Self {
            name,
            repo,
            data,
            scratch,
        }
    }

    fn repo_arg(&self) -> &str {
        self.repo.to_str().expect("utf8")
    }

    fn commit(&self, reference: &str) -> String {
        git(
            &self.repo,
            &["rev-parse", &format!("{reference}^{{commit}}")],
        )
    }

    /// `seatrial <args>` with this recipe's data directory.
    fn seatrial(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_seatrial"))
            .args(args)
            .env("SEATRIAL_DATA_DIR", &self.data)
            .output()
            .expect("run seatrial")
    }

    /// Arguments of `seatrial test` of this recipe at `reference`, its JSON report written to a
    /// new file (returned).
    fn test_args(&self, reference: &str, extra: &[&str]) -> (Vec<String>, PathBuf) {
        static REPORTS: AtomicUsize = AtomicUsize::new(0);
        let report = self.data.join(format!(
            "report-{}.json",
            REPORTS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut args: Vec<String> = [
            "test",
            self.repo_arg(),
            "--ref",
            reference,
            "--env",
            &format!("SEED_SECONDS={SEED_SECONDS}"),
            "--json",
            report.to_str().expect("utf8"),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        (args, report)
    }

    /// `seatrial test <repo> --ref R [extra]`: its output and its JSON report (Null if none).
    fn test(&self, reference: &str, extra: &[&str]) -> (Output, Value) {
        let (args, report) = self.test_args(reference, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = self.seatrial(&args);
        (o, read_report(&report))
    }

    /// `seatrial warm list --json`, parsed.
    fn warm_list(&self) -> Vec<Value> {
        let o = self.seatrial(&["warm", "list", "--json"]);
        assert_eq!(o.status.code(), Some(0), "warm list: {}", text(&o));
        let list: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("warm list --json prints JSON ({e}): {}", text(&o)));
        list.as_array()
            .unwrap_or_else(|| panic!("warm list --json prints an array: {list:#}"))
            .clone()
    }

    /// The canonical of this recipe as `warm list --json` shows it.
    fn canonical(&self) -> Value {
        let list = self.warm_list();
        let mine: Vec<&Value> = list.iter().filter(|c| c["recipe"] == *self.name).collect();
        assert_eq!(mine.len(), 1, "one canonical of {}: {list:#?}", self.name);
        mine[0].clone()
    }

    /// Snapshot directories (those holding a manifest.json) under `<data>/warm/`.
    fn snapshot_dirs(&self) -> Vec<PathBuf> {
        files_under(&self.data.join("warm"))
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n == "manifest.json"))
            .filter_map(|p| p.parent().map(Path::to_owned))
            .collect()
    }

    /// Removes what a canonical of this recipe may have left: `warm drop`, then by hand.
    fn remove_everything(&self, canonical: Option<&Value>) {
        let _ = self.seatrial(&["warm", "drop", &self.name]);
        if let Some(c) = canonical {
            if let Some(stack) = c["stack"].as_str() {
                remove_stack_services(stack);
            }
            for v in volumes_of(c) {
                let _ = Command::new("docker")
                    .args(["volume", "rm", "-f", &v])
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn read_report(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.map_while(Result::ok) {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn stages(report: &Value) -> Vec<(String, String)> {
    report["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("a report with stages: {report:#}"))
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["result"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn stage<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no stage {name} in {report:#}"))
}

fn volumes_of(canonical: &Value) -> Vec<String> {
    canonical["volumes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn volume_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["volume", "inspect", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("docker")
        .success()
}

/// Services and containers of a stack (empty when it is undeployed).
fn deployed(stack: &str) -> String {
    let label = format!("label=com.docker.stack.namespace={stack}");
    format!(
        "{}{}",
        docker(&["service", "ls", "-q", "--filter", &label]),
        docker(&["ps", "-aq", "--filter", &label])
    )
}

fn remove_stack_services(stack: &str) {
    let label = format!("label=com.docker.stack.namespace={stack}");
    for id in docker(&["service", "ls", "-q", "--filter", &label]).lines() {
        let _ = Command::new("docker").args(["service", "rm", id]).output();
    }
}

/// Every engine object whose `io.seatrial.recipe` label mentions `recipe`.
fn objects_of_recipe(recipe: &str) -> Vec<String> {
    const LABEL: &str = "io.seatrial.recipe";
    let filter = format!("label={LABEL}");
    let mut found = Vec::new();
    // (kind, list command, the label in `inspect --format`)
    let kinds: [(&str, Vec<&str>, String); 6] = [
        (
            "service",
            vec!["service", "ls", "-q"],
            format!("{{{{index .Spec.Labels \"{LABEL}\"}}}}"),
        ),
        (
            "container",
            vec!["ps", "-aq"],
            format!("{{{{index .Config.Labels \"{LABEL}\"}}}}"),
        ),
        (
            "network",
            vec!["network", "ls", "-q"],
            format!("{{{{index .Labels \"{LABEL}\"}}}}"),
        ),
        (
            "volume",
            vec!["volume", "ls", "-q"],
            format!("{{{{index .Labels \"{LABEL}\"}}}}"),
        ),
        (
            "secret",
            vec!["secret", "ls", "-q"],
            format!("{{{{index .Spec.Labels \"{LABEL}\"}}}}"),
        ),
        (
            "config",
            vec!["config", "ls", "-q"],
            format!("{{{{index .Spec.Labels \"{LABEL}\"}}}}"),
        ),
    ];
    for (kind, list, format) in kinds {
        let mut args = list.clone();
        args.extend(["--filter", &filter]);
        for id in docker(&args).lines().filter(|l| !l.is_empty()) {
            let inspect = if kind == "container" {
                vec!["inspect", "--format", &format, id]
            } else {
                vec![kind, "inspect", "--format", &format, id]
            };
            if docker(&inspect).contains(recipe) {
                found.push(format!("{kind} {id}"));
            }
        }
    }
    found
}

fn contents(canonical: &Value) -> Contents {
    volumes_of(canonical)
        .into_iter()
        .map(|v| {
            let l = listing(&v);
            (v, l)
        })
        .collect()
}

/// The canonical's data is byte for byte what it was, and its volumes still say what they are.
fn assert_unchanged(before: &Contents, canonical: &Value, when: &str) {
    let after = contents(canonical);
    let diff = differences(before, &after);
    assert!(
        diff.is_empty(),
        "{when}: the canonical's data changed:\n{}",
        diff.join("\n")
    );
    for v in volumes_of(canonical) {
        assert_eq!(
            docker(&[
                "volume",
                "inspect",
                "--format",
                "{{index .Labels \"io.seatrial.kind\"}}",
                &v
            ]),
            "canonical",
            "{when}: volume {v} keeps its label"
        );
    }
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() >= 20
            && s.as_bytes()[4] == b'-'
            && s.as_bytes()[10] == b'T'
            && (s.ends_with('Z') || s[19..].contains(['+', '-']))
    })
}

/// The quick path's stages, in order.
const QUICK_STAGES: [&str; 8] = [
    "prepare",
    "install",
    "serve",
    "upgrade",
    "serve-after-upgrade",
    "tests",
    "teardown",
    "restore",
];

// ---- The shared canonical ----------------------------------------------------------------

/// A promoted canonical that the cases below take turns on.
struct Shared {
    recipe: Recipe,
    /// The report of the `--promote` run that made it.
    promote: Value,
    promote_stderr: String,
    /// `warm list`'s entry right after the promotion.
    canonical: Value,
    /// Its data right after the promotion.
    known_good: Contents,
}

static SHARED: Mutex<Option<Shared>> = Mutex::new(None);
/// Tests that use the shared canonical; the last one to finish removes it.
const SHARED_USERS: usize = 7;
static SHARED_DONE: AtomicUsize = AtomicUsize::new(0);

/// Exclusive use of the shared canonical; removes it when the last of its users is done.
struct SharedUse(Option<MutexGuard<'static, Option<Shared>>>);

impl std::ops::Deref for SharedUse {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        self.0
            .as_ref()
            .and_then(|g| g.as_ref())
            .expect("the shared canonical")
    }
}

impl Drop for SharedUse {
    fn drop(&mut self) {
        let Some(mut guard) = self.0.take() else {
            return;
        };
        if SHARED_DONE.fetch_add(1, Ordering::SeqCst) + 1 == SHARED_USERS
            && let Some(shared) = guard.take()
        {
            shared.recipe.remove_everything(Some(&shared.canonical));
        }
    }
}

fn shared() -> SharedUse {
    let mut guard = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let recipe = Recipe::new("s");
        let (o, promote) = recipe.test("1.1.0+1", &["--promote"]);
        if o.status.code() != Some(0) {
            // Whatever a half-done promotion recorded (without asserting on `warm list`).
            let listed: Option<Value> =
                serde_json::from_slice(&recipe.seatrial(&["warm", "list", "--json"]).stdout).ok();
            let first = listed.as_ref().and_then(|l| l.get(0));
            recipe.remove_everything(first);
            // This user is done too: the count still reaches SHARED_USERS.
            SHARED_DONE.fetch_add(1, Ordering::SeqCst);
            panic!(
                "--promote of the latest release passes, exit {:?}: {}",
                o.status.code(),
                text(&o)
            );
        }
        let canonical = recipe.canonical();
        let known_good = contents(&canonical);
        *guard = Some(Shared {
            recipe,
            promote,
            promote_stderr: stderr(&o),
            canonical,
            known_good,
        });
    }
    SharedUse(Some(guard))
}

// ---- Promotion ---------------------------------------------------------------------------

#[test]
fn promote_of_the_latest_release_makes_an_undeployed_canonical() {
    let s = shared();
    let report = &s.promote;
    assert_eq!(report["mode"], "cold", "{report:#}");
    assert_eq!(report["result"], "pass", "{report:#}");
    let all = stages(report);
    let last = all.last().expect("stages");
    assert_eq!(
        (last.0.as_str(), last.1.as_str()),
        ("promote", "pass"),
        "the last stage promotes: {all:?}\n{}",
        s.promote_stderr
    );

    let c = &s.canonical;
    for key in [
        "recipe",
        "stack",
        "version",
        "commit",
        "volumes",
        "snapshot",
        "last_used",
    ] {
        assert!(c.get(key).is_some(), "warm list shows {key}: {c:#}");
    }
    assert_eq!(c["recipe"], *s.recipe.name);
    assert_eq!(c["version"], "1.1.0+1");
    assert_eq!(c["commit"], *s.recipe.commit("1.1.0+1"));
    let stack = c["stack"].as_str().expect("stack");
    assert!(!stack.is_empty());
    assert!(
        c["last_used"].is_null() || is_rfc3339(&c["last_used"]),
        "{c:#}"
    );
    assert!(is_rfc3339(&c["snapshot"]["taken_at"]), "{c:#}");
    assert!(
        c["snapshot"]["bytes"].as_u64().is_some_and(|b| b > 0),
        "{c:#}"
    );

    let volumes = volumes_of(c);
    assert!(
        !volumes.is_empty(),
        "the canonical keeps its volumes: {c:#}"
    );
    let labelled = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        "label=io.seatrial.kind=canonical",
    ]);
    for v in &volumes {
        assert!(volume_exists(v), "volume {v} exists");
        assert!(
            labelled.lines().any(|l| l == v),
            "volume {v} is labelled io.seatrial.kind=canonical"
        );
    }
    assert!(
        s.known_good.values().any(|l| l.contains_key(".seeded")),
        "the promoted data is the seeded data: {:?}",
        s.known_good
            .values()
            .map(|l| l.keys().collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
    assert_eq!(deployed(stack), "", "the canonical is undeployed");
    assert_eq!(
        s.recipe.snapshot_dirs().len(),
        1,
        "one snapshot under {}/warm",
        s.recipe.data.display()
    );
}

#[test]
fn promote_of_a_release_that_is_not_the_latest_is_refused_before_deploying() {
    let recipe = Recipe::new("old");
    let before = objects_of_recipe(&recipe.name);
    let (o, _) = recipe.test("1.0.0+1", &["--promote"]);
    let after = objects_of_recipe(&recipe.name);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("latest release"),
        "says it is not the latest release: {}",
        stderr(&o)
    );
    assert_eq!(before, after, "nothing was deployed");
    assert_eq!(recipe.warm_list(), Vec::<Value>::new());
    recipe.remove_everything(None);
}

// ---- Quick runs --------------------------------------------------------------------------

#[test]
fn quick_run_of_a_good_change_passes_and_leaves_the_canonical_as_it_was() {
    let s = shared();
    let before = contents(&s.canonical);
    let (o, report) = s.recipe.test("good-change", &["--quick"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(report["mode"], "quick", "{report:#}");
    assert_eq!(report["result"], "pass", "{report:#}");
    let expected: Vec<(String, String)> = QUICK_STAGES
        .iter()
        .map(|n| ((*n).to_owned(), "pass".to_owned()))
        .collect();
    assert_eq!(stages(&report), expected, "{report:#}");

    assert_unchanged(&before, &s.canonical, "after a passing quick run");
    assert_unchanged(&s.known_good, &s.canonical, "against the promotion");
    let now = s.recipe.canonical();
    assert_eq!(now["version"], "1.1.0+1", "a quick run never promotes");
    assert_eq!(now["commit"], s.canonical["commit"]);
    assert_eq!(now["volumes"], s.canonical["volumes"]);
    assert!(is_rfc3339(&now["last_used"]), "last_used is set: {now:#}");
    assert_eq!(
        deployed(now["stack"].as_str().expect("stack")),
        "",
        "undeployed again"
    );
}

#[test]
fn quick_run_of_a_destructive_change_fails_and_the_canonical_is_restored() {
    let s = shared();
    let before = contents(&s.canonical);
    let (o, report) = s.recipe.test("bad-change", &["--quick"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a failing change is a fail, not an error: {}",
        text(&o)
    );
    assert_eq!(report["mode"], "quick", "{report:#}");
    assert_eq!(report["result"], "fail", "{report:#}");
    assert_eq!(
        stage(&report, "restore")["result"],
        "pass",
        "the known-good is put back: {report:#}"
    );
    assert_unchanged(&before, &s.canonical, "after a failed quick run");
    let now = s.recipe.canonical();
    assert_eq!(now["version"], "1.1.0+1");
    assert_eq!(now["commit"], s.canonical["commit"]);
    assert_eq!(deployed(now["stack"].as_str().expect("stack")), "");
}

#[test]
fn quick_run_without_a_canonical_is_refused_or_falls_back_to_cold() {
    let recipe = Recipe::new("none");
    let (o, _) = recipe.test("good-change", &["--quick"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&recipe.name) && err.contains("seatrial warm seed"),
        "names the recipe and how to make a canonical: {err}"
    );

    let (o, report) = recipe.test("good-change", &["--quick", "--fallback", "cold"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(report["mode"], "cold", "{report:#}");
    assert_eq!(report["result"], "pass", "{report:#}");
    let stack = report["stack"].as_str().expect("stack");
    assert_eq!(common::leftovers(stack), "", "a cold run leaves nothing");
    assert_eq!(
        recipe.warm_list(),
        Vec::<Value>::new(),
        "a fallback promotes nothing"
    );
    recipe.remove_everything(None);
}

#[test]
fn quick_run_killed_mid_upgrade_is_repaired_by_the_next_run() {
    let s = shared();
    let before = contents(&s.canonical);
    let stack = s.canonical["stack"].as_str().expect("stack").to_owned();
    let change = s.recipe.commit("good-change");
    let (args, _) = s.recipe.test_args("good-change", &["--quick"]);
    let log = s.recipe.data.join("killed.stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args(&args)
        .env("SEATRIAL_DATA_DIR", &s.recipe.data)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start the quick run");
    // In upgrade: the canonical's services carry the change's commit.
    let commit_filter = format!("label=io.seatrial.commit={change}");
    let stack_filter = format!("label=com.docker.stack.namespace={stack}");
    wait_for(
        "the quick run to upgrade to the change",
        Duration::from_secs(180),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the quick run ended ({status}) before its upgrade: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let upgrading = !docker(&[
                "service",
                "ls",
                "-q",
                "--filter",
                &stack_filter,
                "--filter",
                &commit_filter,
            ])
            .is_empty();
            upgrading.then_some(())
        },
    );
    child.kill().expect("kill -9");
    child.wait().expect("reap");

    let (o, report) = s.recipe.test("good-change", &["--quick"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(report["mode"], "quick");
    let prepare = stage(&report, "prepare");
    assert_eq!(prepare["result"], "pass", "{prepare:#}");
    assert!(
        prepare["detail"]
            .as_str()
            .is_some_and(|d| d.to_lowercase().contains("restor")),
        "prepare says it restored the canonical first: {prepare:#}"
    );
    assert_unchanged(
        &before,
        &s.canonical,
        "after a killed quick run and the next",
    );
    assert_eq!(deployed(&stack), "", "undeployed again");
}

#[test]
fn canonical_volume_removed_by_hand_is_restored_from_the_snapshot() {
    let s = shared();
    let before = contents(&s.canonical);
    for v in volumes_of(&s.canonical) {
        let o = Command::new("docker")
            .args(["volume", "rm", &v])
            .output()
            .expect("docker");
        assert!(o.status.success(), "docker volume rm {v}: {}", text(&o));
    }
    let (o, report) = s.recipe.test("good-change", &["--quick"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(report["mode"], "quick");
    assert_unchanged(&before, &s.canonical, "after restoring removed volumes");
}

/// Flips one byte of a file, and flips it back when dropped.
struct FlippedByte {
    path: PathBuf,
    at: usize,
}

impl FlippedByte {
    fn new(path: &Path) -> Self {
        let mut bytes = std::fs::read(path).expect("read");
        let at = bytes.len() / 2;
        bytes[at] ^= 0xff;
        std::fs::write(path, &bytes).expect("write");
        Self {
            path: path.to_owned(),
            at,
        }
    }
}

impl Drop for FlippedByte {
    fn drop(&mut self) {
        if let Ok(mut bytes) = std::fs::read(&self.path) {
            bytes[self.at] ^= 0xff;
            let _ = std::fs::write(&self.path, &bytes);
        }
    }
}

#[test]
fn corrupted_snapshot_is_refused_with_exit_3_and_how_to_reseed() {
    let s = shared();
    let before = contents(&s.canonical);
    let tar = files_under(&s.recipe.data.join("warm"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "tar"))
        .unwrap_or_else(|| panic!("a .tar under {}/warm", s.recipe.data.display()));
    let flipped = FlippedByte::new(&tar);
    let (o, _) = s.recipe.test("good-change", &["--quick"]);
    drop(flipped);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = stderr(&o);
    let snapshot_dir = tar.parent().expect("dir").to_string_lossy().into_owned();
    let file_name = tar
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        err.contains(&snapshot_dir) || err.contains(&file_name),
        "names the snapshot ({}): {err}",
        tar.display()
    );
    assert!(
        err.contains("seatrial warm seed"),
        "says how to re-seed: {err}"
    );
    assert_unchanged(&before, &s.canonical, "after refusing a corrupted snapshot");
    assert_eq!(
        deployed(s.canonical["stack"].as_str().expect("stack")),
        "",
        "nothing deployed"
    );
}

#[test]
fn janitor_never_removes_a_canonical() {
    let s = shared();
    let before = contents(&s.canonical);
    let o = s.recipe.seatrial(&["janitor", "--max-age", "0s"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for v in volumes_of(&s.canonical) {
        assert!(volume_exists(&v), "the janitor kept volume {v}");
    }
    assert_unchanged(&before, &s.canonical, "after the janitor");
    assert_eq!(s.recipe.canonical()["version"], "1.1.0+1");
}

// ---- Dropping ----------------------------------------------------------------------------

#[test]
fn warm_drop_removes_the_canonicals_volumes_and_snapshot() {
    let recipe = Recipe::new("drop");
    let (o, _) = recipe.test("1.1.0+1", &["--promote"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let canonical = recipe.canonical();
    let volumes = volumes_of(&canonical);
    assert!(!volumes.is_empty(), "{canonical:#}");
    let snapshots = recipe.snapshot_dirs();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");

    let o = recipe.seatrial(&["warm", "drop", &recipe.name]);
    let list = recipe.warm_list();
    let left: Vec<&String> = volumes.iter().filter(|v| volume_exists(v)).collect();
    let snapshot_left = snapshots[0].exists();
    recipe.remove_everything(Some(&canonical));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(left.is_empty(), "volumes left after warm drop: {left:?}");
    assert!(
        !snapshot_left,
        "the snapshot {} is gone",
        snapshots[0].display()
    );
    assert_eq!(list, Vec::<Value>::new());
}

// Keep SHARED_USERS equal to the number of tests above that call `shared()`.
#[test]
fn shared_users_count_matches() {
    let source = include_str!("warm.rs");
    let users = source.matches(concat!("let s = ", "shared();")).count();
    assert_eq!(
        users, SHARED_USERS,
        "SHARED_USERS must count the tests using shared()"
    );
}
