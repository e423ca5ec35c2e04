//! What the infra page and `GET /api/infra` show: each `[[infra]]` app (deployed release,
//! last-good, last action, held notes, an upgrade under way or left for a human), the recent
//! alerts, and the nightly job (schedule, next time, what the last one did). Gathered from the
//! config, `<data dir>/infra/`, the engine (the deployed release, within a time limit) and the
//! nightly record.

use std::time::Duration;

use jiff::Timestamp;
use seatrial_engine::{Engine, labels};
use seatrial_trial::infra::{InfraApp, InfraDir, LastAction, Pending, Release, Step};
use serde::Serialize;

use super::schedule::NightlyOutcome;
use super::state::Shared;

/// How many alerts the page shows.
pub const RECENT_ALERTS: usize = 20;

/// How long the page waits for the engine to say what is deployed.
const ENGINE_LIMIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize)]
pub struct InfraView {
    /// `None`: no `[schedule]`, no nightly job.
    pub schedule: Option<ScheduleView>,
    pub nightly: NightlyView,
    pub apps: Vec<AppView>,
    /// Newest first, as recorded (`event`, `app`, `from`, `to`, `reason`, `notes`, `severity`,
    /// `at`, `deliveries`).
    pub alerts: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub nightly: String,
    pub timezone: String,
    /// RFC 3339, UTC.
    pub next: Option<String>,
    /// The same in the schedule's time zone, for people (`2025-03-30 03:00 CEST`).
    pub next_local: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NightlyView {
    /// What it is doing now; `None` when it is not running.
    pub running: Option<String>,
    pub last_started_at: Option<String>,
    pub last_finished_at: Option<String>,
    /// When the last nightly that failed nothing finished.
    pub last_success_at: Option<String>,
    pub last: Option<NightlyOutcome>,
}

/// Where the deployed release was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The `io.seatrial.version` label of its services.
    Engine,
    /// The engine did not answer: the recorded last-good release.
    Record,
}

#[derive(Debug, Clone, Serialize)]
pub struct Deployed {
    /// `None`: nothing of the app is deployed.
    pub version: Option<String>,
    pub source: Source,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppView {
    pub name: String,
    pub recipe: String,
    pub policy: &'static str,
    pub deployed: Deployed,
    pub last_good: Option<Release>,
    pub last: Option<LastAction>,
    /// The release notes that held the last upgrade back (the last action was `held`).
    pub held_notes: Option<String>,
    /// An upgrade under way (or interrupted, or left for a human).
    pub pending: Option<Pending>,
    /// What a person has to do, when anything.
    pub attention: Option<String>,
    /// Releases that failed and are not tried again until a newer one exists.
    pub failed: Vec<String>,
    /// The app's state could not be read.
    pub error: Option<String>,
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The schedule and the next nightly time (`None`: no schedule).
pub fn schedule_view(shared: &Shared) -> Option<ScheduleView> {
    let s = shared.config.schedule.as_ref()?;
    let next = shared
        .nightly_now()
        .next
        .or_else(|| s.next_after(Timestamp::now()));
    Some(ScheduleView {
        nightly: s.nightly.to_string(),
        timezone: s.timezone.clone(),
        next: next.map(rfc3339),
        next_local: next.map(|t| s.local(t)),
    })
}

/// Gathers the view now.
pub async fn gather(shared: &Shared) -> InfraView {
    let status = shared.nightly_now();
    let schedule = schedule_view(shared);
    let record = &status.record;
    let nightly = NightlyView {
        running: status.phase.clone(),
        last_started_at: record.last_started_at.map(rfc3339),
        last_finished_at: record.last_finished_at.map(rfc3339),
        last_success_at: record.last_success().map(rfc3339),
        last: record.last.clone(),
    };
    let dir = InfraDir::new(&shared.config.data_dir);
    let engine = if shared.config.infra.apps.is_empty() {
        None
    } else {
        tokio::time::timeout(ENGINE_LIMIT, shared.engine())
            .await
            .ok()
            .and_then(Result::ok)
    };
    // Asked side by side, so a slow engine costs the page one time limit, not one per app.
    let lookups = shared.config.infra.apps.iter().map(|app| async {
        match &engine {
            Some(e) => tokio::time::timeout(ENGINE_LIMIT, deployed(e.as_ref(), &app.name))
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        }
    });
    let deployed = futures_util::future::join_all(lookups).await;
    let apps = shared
        .config
        .infra
        .apps
        .iter()
        .zip(deployed)
        .map(|(app, deployed)| app_view(&dir, app, deployed))
        .collect();
    InfraView {
        schedule,
        nightly,
        apps,
        alerts: dir.recent_alerts(RECENT_ALERTS),
    }
}

/// The release the engine runs for `stack` (`Some(None)`: nothing deployed).
async fn deployed(engine: &dyn Engine, stack: &str) -> Result<Option<String>, String> {
    let services = engine.ps(stack).await.map_err(|e| e.to_string())?;
    if services.is_empty() {
        return Ok(None);
    }
    let abra = format!("coop-cloud.{stack}.version");
    for s in &services {
        let l = engine
            .service_labels(&s.name)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(v) = l.get(labels::VERSION).or_else(|| l.get(&abra)) {
            return Ok(Some(v.clone()));
        }
    }
    Err(format!("no service of {stack} says its release"))
}

/// One app as shown: `deployed` is what the engine said (`None`: it did not answer).
pub fn app_view(dir: &InfraDir, app: &InfraApp, deployed: Option<Option<String>>) -> AppView {
    let (state, error) = match dir.load(&app.name) {
        Ok(s) => (s, None),
        Err(e) => (Default::default(), Some(e)),
    };
    let deployed = match deployed {
        Some(version) => Deployed {
            version,
            source: Source::Engine,
        },
        None => Deployed {
            version: state.last_good.as_ref().map(|r| r.version.clone()),
            source: Source::Record,
        },
    };
    let held_notes = state
        .last
        .as_ref()
        .filter(|l| l.action == "held")
        .and_then(|l| l.notes.clone());
    let attention = match (&state.pending, &state.last) {
        (Some(p), _) if p.step == Step::Failed => Some(format!(
            "left for a human: the rollback from {} to {} failed{}; its snapshot is kept. Fix it, then `seatrial reconcile --retry {}`",
            p.to.version,
            p.from.version,
            p.failure
                .as_deref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default(),
            app.name
        )),
        (Some(p), _) => Some(format!(
            "an upgrade from {} to {} is under way (or was interrupted at step {}; the next reconcile finishes it)",
            p.from.version,
            p.to.version,
            serde_json::to_value(p.step)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        )),
        (None, Some(l)) if l.action == "held" => Some(format!(
            "held for a human: {} is not applied unattended",
            l.to.as_deref().unwrap_or("the new release"),
        )),
        (None, Some(l)) if l.action == "failed" => {
            Some(format!("the last reconcile failed: {}", l.reason))
        }
        _ => None,
    };
    AppView {
        name: app.name.clone(),
        recipe: app.recipe.clone(),
        policy: app.policy.as_str(),
        deployed,
        last_good: state.last_good,
        last: state.last,
        held_notes,
        pending: state.pending,
        attention,
        failed: state.failed,
        error,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use seatrial_engine::fake::FakeEngine;
    use seatrial_trial::infra::AppState;

    use super::*;
    use crate::serve::config::load_with;

    const NOTES: &str = "## 3.0.0\n<script>alert('pwned')</script> Run the <b>manual</b> migration first & back up.";

    /// Two apps: `proxy` held by its release notes, `sso` whose rollback failed; two alerts.
    fn write_state(data: &std::path::Path) {
        let dir = InfraDir::new(data);
        let release = |v: &str| Release {
            version: v.into(),
            commit: "c0ffee".into(),
        };
        dir.save(
            "proxy",
            &AppState {
                last_good: Some(release("2.4.1+2.11")),
                last: Some(LastAction {
                    action: "held".into(),
                    from: Some("2.4.1+2.11".into()),
                    to: Some("3.0.0+3.0".into()),
                    reason: "the notes of 3.0.0+3.0 match (?i)manual".into(),
                    notes: Some(NOTES.into()),
                    at: "2025-01-10T02:00:05Z".into(),
                }),
                ..AppState::default()
            },
        )
        .expect("save proxy");
        dir.save(
            "sso",
            &AppState {
                last_good: Some(release("1.0.0+25.0")),
                failed: vec!["1.1.0+26.0".into()],
                pending: Some(Pending {
                    from: release("1.0.0+25.0"),
                    to: release("1.1.0+26.0"),
                    stateful: true,
                    step: Step::Failed,
                    helper_image: String::new(),
                    snapshot: None,
                    started_at: "2025-01-10T02:01:00Z".into(),
                    failure: Some("volume <sso_data> is busy".into()),
                }),
                ..AppState::default()
            },
        )
        .expect("save sso");
        dir.append_alert(&serde_json::json!({
            "event": "held", "app": "proxy", "from": "2.4.1+2.11", "to": "3.0.0+3.0",
            "reason": "the notes ask for a human", "notes": NOTES, "severity": "warning",
            "at": "2025-01-10T02:00:05Z",
            "deliveries": [{"target": "ntfy https://ntfy.example.org/ops", "error": null}]
        }))
        .expect("alert");
        dir.append_alert(&serde_json::json!({
            "event": "failed", "app": "sso", "from": "1.0.0+25.0", "to": "1.1.0+26.0",
            "reason": "rollback failed", "severity": "critical", "at": "2025-01-10T02:03:00Z",
            "deliveries": [{"target": "webhook https://hooks.example.org/<x>", "error": "503 Service Unavailable"}]
        }))
        .expect("alert");
    }

    async fn server() -> (tempfile::TempDir, Arc<Shared>) {
        let root = tempfile::tempdir().expect("tmp");
        let data = root.path().join("data");
        let path = root.path().join("seatrial.toml");
        std::fs::write(
            &path,
            format!(
                "data_dir = {data:?}\n[schedule]\nnightly = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\n\n[[infra]]\nname = \"proxy\"\nrecipe = \"https://git.example.org/coop-cloud/traefik.git\"\n\n[[infra]]\nname = \"sso\"\nrecipe = \"https://git.example.org/coop-cloud/keycloak.git\"\npolicy = \"patch\"\n"
            ),
        )
        .expect("config");
        let config = load_with(Some(&path), &|_| None).expect("config");
        std::fs::create_dir_all(&config.data_dir).expect("data");
        write_state(&config.data_dir);
        let store = seatrial_store::Store::open(&config.database_url)
            .await
            .expect("store");
        let shared = Arc::new(Shared::new(store, config));
        shared.use_engine(Arc::new(FakeEngine::new()));
        (root, shared)
    }

    #[tokio::test]
    async fn the_view_says_what_each_app_needs() {
        let (_root, shared) = server().await;
        let view = gather(&shared).await;
        let schedule = view.schedule.as_ref().expect("schedule");
        assert_eq!(schedule.timezone, "Europe/Berlin");
        assert!(
            schedule
                .next_local
                .as_deref()
                .is_some_and(|n| n.contains(" 03:00 ")),
            "{schedule:?}"
        );
        let [proxy, sso] = view.apps.as_slice() else {
            panic!("two apps: {:?}", view.apps);
        };
        // The fake engine runs neither: it says so (not the record).
        assert_eq!(proxy.deployed.source, Source::Engine);
        assert_eq!(proxy.deployed.version, None);
        assert_eq!(proxy.held_notes.as_deref(), Some(NOTES));
        assert!(
            proxy
                .attention
                .as_deref()
                .is_some_and(|a| a.starts_with("held for a human: 3.0.0+3.0")),
            "{proxy:?}"
        );
        assert_eq!(
            proxy.last_good.as_ref().map(|r| r.version.as_str()),
            Some("2.4.1+2.11")
        );
        assert!(
            sso.attention
                .as_deref()
                .is_some_and(|a| a.starts_with("left for a human")
                    && a.contains("volume <sso_data> is busy")
                    && a.contains("--retry sso")),
            "{sso:?}"
        );
        assert_eq!(sso.policy, "patch");
        assert_eq!(view.alerts.len(), 2);
        assert_eq!(view.alerts[0]["app"], "sso", "newest first");
        // Without an engine answer the recorded last-good release stands in.
        let dir = InfraDir::new(&shared.config.data_dir);
        let offline = app_view(&dir, &shared.config.infra.apps[0], None);
        assert_eq!(
            (offline.deployed.version.as_deref(), offline.deployed.source),
            (Some("2.4.1+2.11"), Source::Record)
        );
    }

    #[tokio::test]
    async fn the_infra_page_and_api_escape_release_notes() {
        let (_root, shared) = server().await;
        let app = crate::serve::http::router(shared.clone(), None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let get = |path: &str| {
            let (client, url) = (client.clone(), format!("{base}{path}"));
            async move {
                let r = client.get(url).send().await.expect("GET");
                assert_eq!(r.status(), 200);
                r.text().await.expect("body")
            }
        };
        let page = get("/infra").await;
        assert!(!page.contains("<script>alert"), "notes are escaped: {page}");
        assert!(
            page.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; Run the &lt;b&gt;manual&lt;/b&gt; migration first &amp; back up."),
            "the held notes are shown as text: {page}"
        );
        assert!(page.contains("volume &lt;sso_data&gt; is busy"));
        assert!(page.contains("https://hooks.example.org/&lt;x&gt; ✗ 503 Service Unavailable"));
        assert!(
            page.contains("data-attention=\"pending\"")
                && page.contains("data-attention=\"human\"")
        );
        assert!(page.contains("id=\"next-nightly\"") && page.contains("Europe/Berlin"));
        assert!(
            page.contains("<a href=\"/infra\">infra</a>"),
            "linked from the nav"
        );
        let runs = get("/").await;
        assert!(
            runs.contains("id=\"next-nightly\""),
            "the runs page says when the next nightly is"
        );

        let api: serde_json::Value = serde_json::from_str(&get("/api/infra").await).expect("json");
        assert_eq!(api["apps"][0]["name"], "proxy");
        assert_eq!(
            api["apps"][0]["held_notes"], NOTES,
            "JSON carries the notes as they are"
        );
        assert_eq!(api["apps"][1]["pending"]["step"], "failed");
        assert_eq!(api["schedule"]["nightly"], "0 3 * * *");
        assert!(
            api["schedule"]["next"]
                .as_str()
                .is_some_and(|n| n.ends_with('Z'))
        );
        assert_eq!(api["nightly"]["running"], serde_json::Value::Null);

        let metrics = get("/metrics").await;
        assert!(
            metrics.contains("seatrial_nightly_last_success_timestamp_seconds 0\n"),
            "{metrics}"
        );
        assert!(metrics.contains("seatrial_nightly_running 0\n"));
        server.abort();
    }
}
