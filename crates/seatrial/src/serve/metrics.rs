//! Prometheus metrics, rendered in the text exposition format. Counts that must survive restarts
//! (runs by state and mode, queue depth, leases) come from the store at scrape time; durations
//! and HTTP figures are this process's own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use seatrial_store::{Mode, Reaped, RunState};

/// Bucket bounds in seconds.
const HTTP_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];
const STAGE_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.len() != bounds.len() {
            self.buckets = vec![0; bounds.len()];
        }
        for (i, b) in bounds.iter().enumerate() {
            if v <= *b {
                self.buckets[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in bounds.iter().enumerate() {
            let n = self.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// What a failed call to the forge was doing: the `operation` label of
/// `seatrial_forge_errors_total` (a fixed set, so the label cannot grow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ForgeOperation {
    /// Reading a repository's new comments.
    Poll,
    /// Reading a pull request and its pushes before queueing.
    ReadPull,
    /// Setting a commit status.
    Status,
    /// Finding, posting or editing seatrial's comment on a pull request.
    Comment,
    /// Answering a comment (a refusal, usage).
    Reply,
}

impl ForgeOperation {
    const ALL: [Self; 5] = [
        Self::Poll,
        Self::ReadPull,
        Self::Status,
        Self::Comment,
        Self::Reply,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::ReadPull => "read_pull",
            Self::Status => "status",
            Self::Comment => "comment",
            Self::Reply => "reply",
        }
    }
}

fn reaped_word(r: Reaped) -> &'static str {
    match r {
        Reaped::Requeued => "requeued",
        Reaped::Errored => "errored",
        Reaped::Cancelled => "cancelled",
    }
}

#[derive(Default)]
struct Inner {
    /// (method, route, status) → count
    requests: BTreeMap<(String, String, u16), u64>,
    /// route → latency
    latency: BTreeMap<String, Histogram>,
    /// (stage, result) → duration
    stages: BTreeMap<(String, String), Histogram>,
    /// (mode, state) → duration
    trials: BTreeMap<(String, String), Histogram>,
    /// What the reaper did with runs whose lease expired → count
    reaps: BTreeMap<&'static str, u64>,
    /// Failed forge calls by operation
    forge_errors: BTreeMap<ForgeOperation, u64>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// What the store says at scrape time.
pub struct StoreFigures {
    pub queued: i64,
    /// How long the run waiting longest has waited (zero when none waits).
    pub oldest_queued: Duration,
    /// Finished runs that did not pass, newest first, back to the last pass.
    pub failing_in_a_row: i64,
    pub running: i64,
    pub active_leases: i64,
    pub by_state_and_mode: Vec<(RunState, Mode, i64)>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }

    pub fn http(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.with(|m| {
            *m.requests
                .entry((method.to_owned(), route.to_owned(), status))
                .or_default() += 1;
            m.latency
                .entry(route.to_owned())
                .or_default()
                .observe(&HTTP_BUCKETS, took.as_secs_f64());
        });
    }

    pub fn stage(&self, stage: &str, result: &str, took: Duration) {
        self.with(|m| {
            m.stages
                .entry((stage.to_owned(), result.to_owned()))
                .or_default()
                .observe(&STAGE_BUCKETS, took.as_secs_f64());
        });
    }

    pub fn trial(&self, mode: &str, state: &str, took: Duration) {
        self.with(|m| {
            m.trials
                .entry((mode.to_owned(), state.to_owned()))
                .or_default()
                .observe(&STAGE_BUCKETS, took.as_secs_f64());
        });
    }

    /// Counts a run the reaper took back from a server that stopped heartbeating.
    pub fn reaped(&self, what: Reaped) {
        self.with(|m| *m.reaps.entry(reaped_word(what)).or_default() += 1);
    }

    /// Counts a forge call that failed.
    pub fn forge_error(&self, operation: ForgeOperation) {
        self.with(|m| *m.forge_errors.entry(operation).or_default() += 1);
    }

    pub fn render(&self, store: &StoreFigures) -> String {
        let mut out = String::new();
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP seatrial_queue_depth Runs waiting to be claimed.\n# TYPE seatrial_queue_depth gauge\n");
        let _ = writeln!(out, "seatrial_queue_depth {}", store.queued);
        out.push_str("# HELP seatrial_queue_oldest_seconds How long the run waiting longest has waited (0: none waits).\n# TYPE seatrial_queue_oldest_seconds gauge\n");
        let _ = writeln!(
            out,
            "seatrial_queue_oldest_seconds {}",
            store.oldest_queued.as_secs_f64()
        );
        out.push_str("# HELP seatrial_runs_failing_in_a_row Newest finished runs (any recipe) that failed, errored or timed out, back to the last pass; cancelled runs are passed over.\n# TYPE seatrial_runs_failing_in_a_row gauge\n");
        let _ = writeln!(
            out,
            "seatrial_runs_failing_in_a_row {}",
            store.failing_in_a_row
        );
        out.push_str("# HELP seatrial_runs_running Runs being tried now (all servers).\n# TYPE seatrial_runs_running gauge\n");
        let _ = writeln!(out, "seatrial_runs_running {}", store.running);
        out.push_str("# HELP seatrial_active_leases Unexpired leases held by servers.\n# TYPE seatrial_active_leases gauge\n");
        let _ = writeln!(out, "seatrial_active_leases {}", store.active_leases);
        out.push_str("# HELP seatrial_runs Runs in the store by state and mode.\n# TYPE seatrial_runs gauge\n");
        for (state, mode, n) in &store.by_state_and_mode {
            let _ = writeln!(
                out,
                "seatrial_runs{{state=\"{}\",mode=\"{}\"}} {n}",
                state.as_str(),
                mode.as_str()
            );
        }
        out.push_str("# HELP seatrial_stage_duration_seconds Trial stage durations (this process).\n# TYPE seatrial_stage_duration_seconds histogram\n");
        for ((stage, result), h) in &m.stages {
            let labels = format!("stage=\"{}\",result=\"{}\"", escape(stage), escape(result));
            h.render(
                &mut out,
                "seatrial_stage_duration_seconds",
                &labels,
                &STAGE_BUCKETS,
            );
        }
        out.push_str("# HELP seatrial_trial_duration_seconds Whole trial durations (this process).\n# TYPE seatrial_trial_duration_seconds histogram\n");
        for ((mode, state), h) in &m.trials {
            let labels = format!("mode=\"{}\",state=\"{}\"", escape(mode), escape(state));
            h.render(
                &mut out,
                "seatrial_trial_duration_seconds",
                &labels,
                &STAGE_BUCKETS,
            );
        }
        out.push_str("# HELP seatrial_lease_reaps_total Runs this process reaped because their server stopped heartbeating, by what became of them.\n# TYPE seatrial_lease_reaps_total counter\n");
        for what in [Reaped::Requeued, Reaped::Errored, Reaped::Cancelled] {
            let word = reaped_word(what);
            let n = m.reaps.get(word).copied().unwrap_or(0);
            let _ = writeln!(out, "seatrial_lease_reaps_total{{action=\"{word}\"}} {n}");
        }
        out.push_str("# HELP seatrial_forge_errors_total Forge calls of this process that failed, by operation.\n# TYPE seatrial_forge_errors_total counter\n");
        for op in ForgeOperation::ALL {
            let n = m.forge_errors.get(&op).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "seatrial_forge_errors_total{{operation=\"{}\"}} {n}",
                op.as_str()
            );
        }
        out.push_str("# HELP seatrial_http_requests_total HTTP requests by method, route and status.\n# TYPE seatrial_http_requests_total counter\n");
        for ((method, route, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "seatrial_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(method),
                escape(route)
            );
        }
        out.push_str("# HELP seatrial_http_request_duration_seconds HTTP latency by route.\n# TYPE seatrial_http_request_duration_seconds histogram\n");
        for (route, h) in &m.latency {
            let labels = format!("route=\"{}\"", escape(route));
            h.render(
                &mut out,
                "seatrial_http_request_duration_seconds",
                &labels,
                &HTTP_BUCKETS,
            );
        }
        out
    }
}

/// The disk budget of warm canonicals: how many, each one's known-good snapshot size, their
/// total, and the budget when one is configured.
pub fn render_warm(
    out: &mut String,
    canonicals: &[seatrial_trial::warm::Summary],
    budget: Option<u64>,
) {
    out.push_str("# HELP seatrial_warm_canonicals Warm canonicals recorded in the data directory.\n# TYPE seatrial_warm_canonicals gauge\n");
    let _ = writeln!(out, "seatrial_warm_canonicals {}", canonicals.len());
    out.push_str("# HELP seatrial_warm_snapshot_bytes Size of a canonical's known-good snapshot on disk.\n# TYPE seatrial_warm_snapshot_bytes gauge\n");
    for c in canonicals {
        let _ = writeln!(
            out,
            "seatrial_warm_snapshot_bytes{{recipe=\"{}\",version=\"{}\"}} {}",
            escape(&c.recipe),
            escape(&c.version),
            c.snapshot.bytes
        );
    }
    out.push_str("# HELP seatrial_warm_bytes Size of all known-good snapshots of warm canonicals.\n# TYPE seatrial_warm_bytes gauge\n");
    let total: u64 = canonicals.iter().map(|c| c.snapshot.bytes).sum();
    let _ = writeln!(out, "seatrial_warm_bytes {total}");
    if let Some(budget) = budget {
        out.push_str("# HELP seatrial_warm_budget_bytes The disk space warm snapshots may use (warm_budget).\n# TYPE seatrial_warm_budget_bytes gauge\n");
        let _ = writeln!(out, "seatrial_warm_budget_bytes {budget}");
    }
}

/// The nightly job, for alerting on one that stopped succeeding: when the last one that failed
/// nothing finished, when the last one finished at all, when the next is due, and whether one
/// runs now (times in Unix seconds; 0: never).
pub fn render_nightly(out: &mut String, status: &crate::serve::state::NightlyStatus) {
    let secs = |t: Option<jiff::Timestamp>| t.map_or(0, |t| t.as_second());
    let gauges = [
        (
            "seatrial_nightly_last_success_timestamp_seconds",
            "When the last nightly job in which nothing failed finished (Unix time; 0: never).",
            secs(status.record.last_success()),
        ),
        (
            "seatrial_nightly_last_finished_timestamp_seconds",
            "When the last nightly job finished, whatever its parts did (Unix time; 0: never).",
            secs(status.record.last_finished_at),
        ),
        (
            "seatrial_nightly_next_timestamp_seconds",
            "When the next nightly job is due (Unix time).",
            secs(status.next),
        ),
        (
            "seatrial_nightly_running",
            "1 while the nightly job runs (and holds this server's capacity).",
            i64::from(status.phase.is_some()),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn exposition_counts_and_buckets() {
        let m = Metrics::default();
        m.http("GET", "/api/runs/{id}", 200, Duration::from_millis(3));
        m.http("GET", "/api/runs/{id}", 200, Duration::from_millis(30));
        m.stage("install", "pass", Duration::from_secs(2));
        m.reaped(Reaped::Errored);
        m.forge_error(ForgeOperation::Status);
        m.forge_error(ForgeOperation::Status);
        let text = m.render(&StoreFigures {
            queued: 4,
            oldest_queued: Duration::from_secs(90),
            failing_in_a_row: 3,
            running: 1,
            active_leases: 1,
            by_state_and_mode: vec![(RunState::Passed, Mode::Cold, 7)],
        });
        assert!(text.contains("seatrial_queue_depth 4\n"), "{text}");
        assert!(text.contains("seatrial_runs{state=\"passed\",mode=\"cold\"} 7\n"));
        assert!(text.contains(
            "seatrial_http_requests_total{method=\"GET\",route=\"/api/runs/{id}\",status=\"200\"} 2\n"
        ));
        assert!(text.contains(
            "seatrial_http_request_duration_seconds_bucket{route=\"/api/runs/{id}\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains(
            "seatrial_http_request_duration_seconds_bucket{route=\"/api/runs/{id}\",le=\"+Inf\"} 2\n"
        ));
        assert!(text.contains(
            "seatrial_stage_duration_seconds_count{stage=\"install\",result=\"pass\"} 1\n"
        ));
        assert!(
            text.contains("seatrial_queue_oldest_seconds 90\n"),
            "{text}"
        );
        assert!(
            text.contains("seatrial_runs_failing_in_a_row 3\n"),
            "{text}"
        );
        // Every label value of a counter is there from the start, so rate() sees the first one.
        assert!(text.contains("seatrial_lease_reaps_total{action=\"requeued\"} 0\n"));
        assert!(text.contains("seatrial_lease_reaps_total{action=\"errored\"} 1\n"));
        assert!(text.contains("seatrial_forge_errors_total{operation=\"poll\"} 0\n"));
        assert!(text.contains("seatrial_forge_errors_total{operation=\"status\"} 2\n"));
        let mut warm = String::new();
        render_warm(&mut warm, &[], None);
        assert!(warm.contains("seatrial_warm_bytes 0\n"), "{warm}");
        assert!(
            !warm.contains("seatrial_warm_budget_bytes"),
            "no budget, no budget metric"
        );
        render_warm(&mut warm, &[], Some(1 << 30));
        assert!(
            warm.contains("seatrial_warm_budget_bytes 1073741824\n"),
            "{warm}"
        );
    }

    /// Every metric family `/metrics` exports, as Prometheus sees the names: the `# TYPE`
    /// lines (a histogram as its `_bucket`, `_sum` and `_count` series) and every sample line.
    fn exported_names() -> BTreeSet<String> {
        let m = Metrics::default();
        m.http("POST", "/api/runs", 201, Duration::from_millis(4));
        m.stage("install", "pass", Duration::from_secs(3));
        m.trial("cold", "passed", Duration::from_secs(60));
        m.reaped(Reaped::Requeued);
        m.forge_error(ForgeOperation::Poll);
        let mut text = m.render(&StoreFigures {
            queued: 1,
            oldest_queued: Duration::from_secs(5),
            failing_in_a_row: 0,
            running: 1,
            active_leases: 1,
            by_state_and_mode: vec![(RunState::Passed, Mode::Cold, 1)],
        });
        render_warm(&mut text, &[], Some(1 << 30));
        let mut names = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE <name> <type>");
                if kind == "histogram" {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                } else {
                    names.insert(name.to_owned());
                }
            } else if !line.starts_with('#') {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                names.insert(line[..end].to_owned());
            }
        }
        names
    }

    /// The metric names a PromQL expression reads: identifiers that are not functions
    /// (followed by `(`), aggregations, keywords, label names (inside `{}`, `by (…)`, `on (…)` …),
    /// durations (`[…]`), numbers or strings.
    fn metric_names(expr: &str) -> BTreeSet<String> {
        // Aggregations too: `sum by (x) (…)` puts its grouping before the parenthesis.
        const KEYWORDS: &str = "and or unless bool offset inf nan sum min max avg group stddev \
                                stdvar count count_values bottomk topk quantile";
        // Followed by a parenthesised list of label names.
        const LABEL_LISTS: &str = "by without on ignoring group_left group_right";
        let is_in = |list: &str, word: &str| list.split_whitespace().any(|w| w == word);
        let chars: Vec<char> = expr.chars().collect();
        let mut names = BTreeSet::new();
        let mut i = 0;
        let skip_to = |from: usize, close: char| {
            chars[from..]
                .iter()
                .position(|c| *c == close)
                .map_or(chars.len(), |p| from + p + 1)
        };
        while i < chars.len() {
            let c = chars[i];
            if c == '{' || c == '[' {
                i = skip_to(i + 1, if c == '{' { '}' } else { ']' });
            } else if c == '"' || c == '\'' {
                i = skip_to(i + 1, c);
            } else if c.is_ascii_digit() || c == '.' {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                let lower = word.to_ascii_lowercase();
                if is_in(LABEL_LISTS, &lower) && next == Some(&'(') {
                    let open = i + chars[i..].iter().position(|c| *c == '(').unwrap_or(0);
                    i = skip_to(open + 1, ')');
                } else if next != Some(&'(') && !is_in(KEYWORDS, &lower) {
                    names.insert(word);
                }
            } else {
                i += 1;
            }
        }
        names
    }

    #[test]
    fn promql_metric_names_are_told_from_functions_labels_and_keywords() {
        assert_eq!(
            metric_names(
                "sum by (operation) (increase(x_total{operation=\"poll\"}[10m])) >= 3 and on() max(y) > 0.9 * z_bytes offset 5m"
            ),
            ["x_total", "y", "z_bytes"].map(String::from).into()
        );
    }

    #[derive(serde::Deserialize)]
    struct RulesFile {
        groups: Vec<RuleGroup>,
    }
    #[derive(serde::Deserialize)]
    struct RuleGroup {
        rules: Vec<Rule>,
    }
    #[derive(serde::Deserialize)]
    struct Rule {
        alert: Option<String>,
        record: Option<String>,
        expr: String,
    }

    #[test]
    fn every_metric_the_alerting_rules_read_is_one_metrics_exports() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let path = root.join("deploy/prometheus/seatrial.rules.yml");
        let text = std::fs::read_to_string(&path).expect("deploy/prometheus/seatrial.rules.yml");
        let rules: RulesFile = serde_saphyr::from_str(&text).expect("the rules file is YAML");
        let exported = exported_names();
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
        let operations = readme
            .split_once("\n## Operations\n")
            .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
            .expect("README.md has an Operations section");
        let mut alerts = 0;
        for rule in rules.groups.iter().flat_map(|g| &g.rules) {
            let name = rule
                .alert
                .as_deref()
                .or(rule.record.as_deref())
                .unwrap_or("?");
            let used = metric_names(&rule.expr);
            assert!(!used.is_empty(), "{name}: reads no metric: {}", rule.expr);
            for metric in &used {
                assert!(
                    exported.contains(metric),
                    "{name} reads {metric}, which /metrics does not export (it exports {exported:?})"
                );
            }
            if let Some(alert) = &rule.alert {
                alerts += 1;
                assert!(
                    operations.contains(&format!("`{alert}`")),
                    "README's Operations section does not describe {alert}"
                );
            }
        }
        assert!(
            alerts >= 5,
            "queue, failures, reaps, forge, warm data: {alerts} alerts"
        );
    }
}
