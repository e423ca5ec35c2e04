//! The dashboard: server-rendered pages (no build step), readable on a phone. The run page
//! follows its log live through server-sent events.

use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use seatrial_store::{Mode, Run, RunId, RunState, StageRecord};

use super::infra_view::{AppView, InfraView, ScheduleView};
use super::view::{ListQuery, ms_rfc3339};

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,sans-serif;color:#1b1f24;background:#f6f7f9}
header{background:#1d3b53;color:#fff;padding:.6rem 1rem;display:flex;gap:1rem;align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none}header strong{font-size:1.1rem;margin-right:auto}
main{padding:1rem;max-width:70rem;margin:auto}
table{width:100%;border-collapse:collapse;background:#fff}th,td{padding:.45rem .5rem;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{font-size:.8rem;text-transform:uppercase;color:#57606a}
.badge{display:inline-block;padding:.05rem .45rem;border-radius:.6rem;font-size:.8rem;font-weight:600;white-space:nowrap}
.mode-cold{background:#dbeafe;color:#1e3a8a}.mode-quick{background:#fef3c7;color:#92400e}.mode-gate{background:#ede9fe;color:#5b21b6}
.s-queued{background:#e5e7eb}.s-running{background:#bfdbfe}.s-passed,.r-pass{background:#bbf7d0;color:#14532d}
.s-failed,.r-fail{background:#fecaca;color:#7f1d1d}.s-errored,.s-timed_out,.r-error{background:#fed7aa;color:#7c2d12}
.s-cancelled,.r-skipped{background:#e5e7eb;color:#374151}
form.filters{display:flex;gap:.5rem;flex-wrap:wrap;margin-bottom:1rem}form.filters input,form.filters select,form.filters button{font:inherit;padding:.3rem}
pre#log{background:#0d1117;color:#e6edf3;padding:.75rem;overflow-x:auto;white-space:pre-wrap;word-break:break-word;min-height:8rem;font-size:.85rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .8rem;background:#fff;padding:.75rem}dt{color:#57606a}dd{margin:0;word-break:break-all}
.detail{white-space:pre-wrap;word-break:break-word;font-size:.85rem}
.a-installed,.a-upgraded{background:#bbf7d0;color:#14532d}.a-held,.sev-warning{background:#fef3c7;color:#92400e}
.a-rolled-back,.a-failed,.sev-critical{background:#fecaca;color:#7f1d1d}.a-skipped{background:#e5e7eb;color:#374151}
.attention{background:#fff7ed;border-left:4px solid #ea580c;padding:.3rem .5rem;margin:.3rem 0}
p.nightly{background:#fff;padding:.5rem .75rem}details pre{white-space:pre-wrap;word-break:break-word;font-size:.85rem;background:#f6f7f9;padding:.5rem;margin:.3rem 0}
@media (max-width:40rem){.wide{display:none}th,td{padding:.35rem .3rem}main{padding:.5rem}}
"#;

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} · seatrial</title><style>{STYLE}</style></head><body><header><strong><a href=\"/\">seatrial</a></strong><a href=\"/\">runs</a><a href=\"/queue\">queue</a><a href=\"/infra\">infra</a><a href=\"/metrics\">metrics</a></header><main>{body}</main></body></html>",
        esc(title)
    )
}

pub fn mode_badge(mode: Mode) -> String {
    let m = mode.as_str();
    let title = match mode {
        Mode::Gate => "push gate: checks, migrations, deploy".to_owned(),
        _ => format!("{m} trial"),
    };
    format!("<span class=\"badge mode-{m}\" title=\"{title}\">{m}</span>")
}

fn state_badge(state: RunState) -> String {
    let s = state.as_str();
    format!(
        "<span class=\"badge s-{s}\" data-state=\"{s}\">{}</span>",
        s.replace('_', " ")
    )
}

fn duration_of(run: &Run) -> String {
    match (run.started_at_ms, run.finished_at_ms) {
        (Some(s), Some(f)) => seatrial_engine::fmt_duration(std::time::Duration::from_millis(
            u64::try_from(f - s).unwrap_or(0),
        )),
        (Some(_), None) => "running".into(),
        _ => String::new(),
    }
}

pub fn list_page(
    runs: &[Run],
    positions: &std::collections::HashMap<RunId, usize>,
    q: &ListQuery,
    limit: i64,
    schedule: Option<&ScheduleView>,
) -> String {
    let mut b = String::from("<h1>Runs</h1>");
    if let Some(s) = schedule {
        b.push_str(&nightly_line(s));
    }
    let sel = |v: &str, cur: &Option<String>| {
        if cur.as_deref() == Some(v) {
            " selected"
        } else {
            ""
        }
    };
    let _ = write!(
        b,
        "<form class=\"filters\" method=\"get\"><input name=\"recipe\" placeholder=\"recipe\" value=\"{}\"><select name=\"state\"><option value=\"\">any state</option>",
        esc(q.recipe.as_deref().unwrap_or(""))
    );
    for s in [
        "queued",
        "running",
        "passed",
        "failed",
        "errored",
        "cancelled",
        "timed_out",
    ] {
        let _ = write!(b, "<option{}>{s}</option>", sel(s, &q.state));
    }
    b.push_str("</select><select name=\"mode\"><option value=\"\">any mode</option>");
    for m in ["cold", "quick", "gate"] {
        let _ = write!(b, "<option{}>{m}</option>", sel(m, &q.mode));
    }
    b.push_str("</select><button>filter</button></form>");
    if runs.is_empty() {
        b.push_str("<p>No runs match.</p>");
    } else {
        b.push_str("<table id=\"runs\"><thead><tr><th>#</th><th>recipe</th><th>mode</th><th>state</th><th class=\"wide\">trigger</th><th class=\"wide\">created</th><th>time</th></tr></thead><tbody>");
        for r in runs {
            let pos = positions
                .get(&r.id)
                .map(|p| format!(" <small>#{p} in queue</small>"))
                .unwrap_or_default();
            let _ = write!(
                b,
                "<tr><td><a href=\"/runs/{id}\">{id}</a></td><td><a href=\"/runs/{id}\">{recipe}</a>{reference}</td><td>{mode}</td><td>{state}{pos}</td><td class=\"wide\">{trigger}</td><td class=\"wide\">{created}</td><td>{time}</td></tr>",
                id = r.id,
                recipe = esc(&r.recipe),
                reference = r
                    .reference
                    .as_deref()
                    .map(|x| format!(" <small>@{}</small>", esc(x)))
                    .unwrap_or_default(),
                mode = mode_badge(r.mode),
                state = state_badge(r.state),
                trigger = r.trigger.as_str(),
                created = ms_rfc3339(r.created_at_ms),
                time = duration_of(r),
            );
        }
        b.push_str("</tbody></table>");
        if runs.len() as i64 == limit
            && let Some(last) = runs.last()
        {
            let mut next = format!("?before={}", last.id);
            for (k, v) in [
                ("recipe", &q.recipe),
                ("state", &q.state),
                ("mode", &q.mode),
            ] {
                if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                    let _ = write!(next, "&{k}={}", esc(&url_encode(v)));
                }
            }
            let _ = write!(b, "<p><a href=\"{next}\">older runs →</a></p>");
        }
    }
    page("runs", &b)
}

/// What a query value in a dashboard link keeps as it is: RFC 3986's unreserved characters, and
/// `/` (recipe paths read better unescaped).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

fn url_encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

pub fn queue_page(
    queue: &[Run],
    running: &[Run],
    capacity: usize,
    warm: &[seatrial_trial::warm::Summary],
    nightly: Option<&str>,
) -> String {
    let mut b = format!(
        "<h1>Queue</h1><p>{} running, {} waiting; this server runs up to {capacity} at a time.</p>",
        running.len(),
        queue.len()
    );
    if let Some(phase) = nightly {
        let _ = write!(
            b,
            "<p class=\"attention\" id=\"nightly-holds\">The <a href=\"/infra\">nightly job</a> holds this server's capacity ({}); queued runs start when it is done.</p>",
            esc(phase)
        );
    }
    b.push_str("<table id=\"queue\"><thead><tr><th>position</th><th>#</th><th>recipe</th><th>mode</th><th class=\"wide\">queued</th></tr></thead><tbody>");
    for r in running {
        let _ = write!(
            b,
            "<tr><td>{}</td><td><a href=\"/runs/{id}\">{id}</a></td><td>{}</td><td>{}</td><td class=\"wide\">{}</td></tr>",
            state_badge(r.state),
            esc(&r.recipe),
            mode_badge(r.mode),
            ms_rfc3339(r.created_at_ms),
            id = r.id
        );
    }
    for (i, r) in queue.iter().enumerate() {
        let _ = write!(
            b,
            "<tr><td>{}</td><td><a href=\"/runs/{id}\">{id}</a></td><td>{}</td><td>{}</td><td class=\"wide\">{}</td></tr>",
            i + 1,
            esc(&r.recipe),
            mode_badge(r.mode),
            ms_rfc3339(r.created_at_ms),
            id = r.id
        );
    }
    b.push_str("</tbody></table>");
    let total: u64 = warm.iter().map(|c| c.snapshot.bytes).sum();
    let _ = write!(
        b,
        "<h2>Warm canonicals</h2><p>{} canonical(s); known-good snapshots take {} on disk (quick runs: lower confidence than cold).</p>",
        warm.len(),
        crate::table::human_bytes(total)
    );
    b.push_str("<table id=\"warm\"><thead><tr><th>recipe</th><th>version</th><th>stack</th><th>volumes</th><th>snapshot</th><th class=\"wide\">last used</th></tr></thead><tbody>");
    for c in warm {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"wide\">{}</td></tr>",
            esc(&c.recipe),
            esc(&c.version),
            esc(&c.stack),
            c.volumes.len(),
            crate::table::human_bytes(c.snapshot.bytes),
            esc(c.last_used.as_deref().unwrap_or("never"))
        );
    }
    b.push_str("</tbody></table>");
    page("queue", &b)
}

pub fn run_page(run: &Run, stages: &[StageRecord], position: Option<usize>) -> String {
    let mut b = format!(
        "<h1>Run {} {} <span id=\"state\">{}</span></h1>",
        run.id,
        mode_badge(run.mode),
        state_badge(run.state)
    );
    match run.mode {
        Mode::Quick => b.push_str("<p><strong>Quick run:</strong> tested against a warm copy — lower confidence than a cold run.</p>"),
        Mode::Gate => b.push_str("<p><strong>Gate run:</strong> the app's push gate (checks, migrations, then — on a deploy branch — deploy, ready, rollback); the recipe is the app's repository.</p>"),
        Mode::Cold => {}
    }
    b.push_str("<dl>");
    let mut row = |k: &str, v: String| {
        if !v.is_empty() {
            let _ = write!(b, "<dt>{k}</dt><dd>{v}</dd>");
        }
    };
    row("recipe", esc(&run.recipe));
    row("ref", esc(run.reference.as_deref().unwrap_or("")));
    row("trigger", run.trigger.to_string());
    row(
        "requested by",
        esc(run.requested_by.as_deref().unwrap_or("")),
    );
    row(
        "queue position",
        position.map(|p| p.to_string()).unwrap_or_default(),
    );
    row("attempt", run.attempt.to_string());
    row("stack", esc(run.stack.as_deref().unwrap_or("")));
    row("created", ms_rfc3339(run.created_at_ms));
    row("time", duration_of(run));
    row("reason", esc(run.reason.as_deref().unwrap_or("")));
    b.push_str("</dl><h2>Stages</h2>");
    if stages.is_empty() {
        b.push_str("<p id=\"no-stages\">No stage has finished yet.</p>");
    } else {
        b.push_str("<table id=\"stages\"><thead><tr><th>stage</th><th>result</th><th>time</th><th class=\"wide\">detail</th></tr></thead><tbody>");
        for s in stages {
            let _ = write!(
                b,
                "<tr><td>{}</td><td><span class=\"badge r-{r}\">{r}</span></td><td>{}</td><td class=\"wide detail\">{}</td></tr>",
                esc(&s.name),
                seatrial_engine::fmt_duration(std::time::Duration::from_millis(
                    u64::try_from(s.duration_ms).unwrap_or(0)
                )),
                esc(&s.detail),
                r = s.result,
            );
        }
        b.push_str("</tbody></table>");
    }
    let _ = write!(
        b,
        "<h2>Log</h2><pre id=\"log\" data-lines=\"0\"></pre><p><small><a href=\"/api/runs/{id}/log\">log as JSON</a> · <a href=\"/api/runs/{id}\">run as JSON</a></small></p>
<script>
(function () {{
  var log = document.getElementById('log'), state = document.getElementById('state');
  var es = new EventSource('/runs/{id}/events');
  es.addEventListener('log', function (e) {{
    log.appendChild(document.createTextNode(e.data + '\\n'));
    log.dataset.lines = String(Number(log.dataset.lines) + 1);
  }});
  es.addEventListener('state', function (e) {{
    var s = e.data;
    if (state.textContent.indexOf(s.replace('_', ' ')) < 0) {{
      state.innerHTML = '<span class=\"badge s-' + s + '\" data-state=\"' + s + '\">' + s.replace('_', ' ') + '</span>';
    }}
  }});
  es.addEventListener('end', function () {{
    es.close();
    // The run ended while this page was open: load it again for the final stages table.
    if (!{done}) {{ setTimeout(function () {{ location.reload(); }}, 500); }}
  }});
}})();
</script>",
        id = run.id,
        done = run.state.is_terminal(),
    );
    page(&format!("run {}", run.id), &b)
}

/// `Next nightly job: 2025-03-30 03:00 CEST`, with the UTC time for machines.
fn nightly_line(s: &ScheduleView) -> String {
    match (&s.next, &s.next_local) {
        (Some(utc), Some(local)) => format!(
            "<p class=\"nightly\" id=\"next-nightly\">Next <a href=\"/infra\">nightly job</a>: <time datetime=\"{}\">{}</time> <small>(<code>{}</code>, {})</small></p>",
            esc(utc),
            esc(local),
            esc(&s.nightly),
            esc(&s.timezone)
        ),
        _ => String::new(),
    }
}

fn action_badge(action: &str) -> String {
    let a = esc(action);
    format!("<span class=\"badge a-{a}\" data-action=\"{a}\">{a}</span>")
}

fn from_to(from: Option<&str>, to: Option<&str>) -> String {
    match (from, to) {
        (Some(f), Some(t)) if f != t => format!("{} → {}", esc(f), esc(t)),
        (_, Some(t)) => esc(t),
        (Some(f), None) => esc(f),
        (None, None) => String::new(),
    }
}

fn infra_app_row(b: &mut String, a: &AppView) {
    let deployed = match (&a.deployed.version, a.deployed.source) {
        (Some(v), super::infra_view::Source::Engine) => esc(v),
        (Some(v), super::infra_view::Source::Record) => format!(
            "{} <small title=\"the engine did not answer: the recorded last-good release\">(recorded)</small>",
            esc(v)
        ),
        (None, super::infra_view::Source::Engine) => "<small>nothing</small>".to_owned(),
        (None, super::infra_view::Source::Record) => "<small>unknown</small>".to_owned(),
    };
    let last_good = a
        .last_good
        .as_ref()
        .map(|r| esc(&r.version))
        .unwrap_or_else(|| "<small>none yet</small>".to_owned());
    let mut last = String::new();
    if let Some(l) = &a.last {
        let _ = write!(
            last,
            "{} {}<div class=\"detail\">{}</div><small>{}</small>",
            action_badge(&l.action),
            from_to(l.from.as_deref(), l.to.as_deref()),
            esc(&l.reason),
            esc(&l.at)
        );
    } else {
        last.push_str("<small>never reconciled</small>");
    }
    if let Some(notes) = &a.held_notes {
        let _ = write!(
            last,
            "<details class=\"held-notes\"><summary>release notes that held it</summary><pre>{}</pre></details>",
            esc(notes)
        );
    }
    if !a.failed.is_empty() {
        let _ = write!(
            last,
            "<div><small>failed before, not retried: {}</small></div>",
            esc(&a.failed.join(", "))
        );
    }
    if let Some(e) = &a.error {
        let _ = write!(last, "<div class=\"attention\">{}</div>", esc(e));
    }
    if let Some(why) = &a.attention {
        let marker = if a.pending.is_some() {
            "pending"
        } else {
            "human"
        };
        let _ = write!(
            last,
            "<div class=\"attention\" data-attention=\"{marker}\">{}</div>",
            esc(why)
        );
    }
    let _ = write!(
        b,
        "<tr data-app=\"{name}\"><td><strong>{name}</strong><div class=\"wide\"><small>{recipe}</small></div><div>deployed <span class=\"deployed\">{deployed}</span></div><div>last-good <span class=\"last-good\">{last_good}</span></div><div><small>policy {policy}</small></div></td><td>{last}</td></tr>",
        name = esc(&a.name),
        recipe = esc(&a.recipe),
        policy = a.policy,
    );
}

/// A value of an alert record as text (records are read from a file: anything may be there).
fn field(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

pub fn infra_page(view: &InfraView) -> String {
    let mut b = String::from("<h1>Infra apps</h1>");
    match &view.schedule {
        Some(s) => b.push_str(&nightly_line(s)),
        None => b.push_str("<p class=\"nightly\" id=\"next-nightly\">No nightly job: set <code>[schedule] nightly</code> in the config to reconcile these apps and refresh the warm canonicals every night.</p>"),
    }
    let n = &view.nightly;
    if let Some(phase) = &n.running {
        let _ = write!(
            b,
            "<p class=\"attention\" id=\"nightly-running\">The nightly job runs now: {}. Queued runs wait for it.</p>",
            esc(phase)
        );
    }
    if view.apps.is_empty() {
        b.push_str("<p>No <code>[[infra]]</code> apps in the config.</p>");
    } else {
        b.push_str("<table id=\"infra-apps\"><thead><tr><th>app</th><th>last action</th></tr></thead><tbody>");
        for a in &view.apps {
            infra_app_row(&mut b, a);
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("<h2>Last nightly job</h2>");
    match (&n.last_started_at, &n.last_finished_at, &n.last) {
        (None, _, _) => b.push_str("<p id=\"last-nightly\">None has run yet.</p>"),
        (Some(started), finished, last) => {
            let finished_after = finished.as_deref().filter(|f| *f >= started.as_str());
            let _ = write!(
                b,
                "<p id=\"last-nightly\">Started {}, {}.</p>",
                esc(started),
                match (finished_after, &n.running) {
                    (Some(f), _) => format!("finished {}", esc(f)),
                    (None, Some(_)) => "running".to_owned(),
                    (None, None) => "interrupted (it runs again at the next start)".to_owned(),
                }
            );
            if let Some(last) = last.as_ref().filter(|_| finished_after.is_some()) {
                b.push_str("<table id=\"sweep\"><thead><tr><th>cold sweep</th><th>release</th><th>run</th><th class=\"wide\">why</th></tr></thead><tbody>");
                for r in &last.sweep {
                    let run = r
                        .run
                        .map(|id| format!("<a href=\"/runs/{id}\">{id}</a> "))
                        .unwrap_or_default();
                    let _ = write!(
                        b,
                        "<tr><td>{}</td><td>{}</td><td>{run}<span class=\"badge s-{state}\">{state}</span></td><td class=\"wide detail\">{}</td></tr>",
                        esc(&r.repo),
                        esc(r.release.as_deref().unwrap_or("")),
                        esc(r.reason.as_deref().unwrap_or("")),
                        state = esc(&r.state),
                    );
                }
                if last.sweep.is_empty() {
                    b.push_str("<tr><td colspan=\"4\"><small>no enrolled recipe</small></td></tr>");
                }
                b.push_str("</tbody></table>");
            }
        }
    }
    b.push_str("<h2>Recent alerts</h2>");
    if view.alerts.is_empty() {
        b.push_str("<p id=\"no-alerts\">No alert was sent.</p>");
    } else {
        b.push_str("<table id=\"alerts\"><thead><tr><th>app</th><th>what</th><th class=\"wide\">sent to</th></tr></thead><tbody>");
        for a in &view.alerts {
            let deliveries: Vec<String> = a
                .get("deliveries")
                .and_then(|d| d.as_array())
                .into_iter()
                .flatten()
                .map(|d| match field(d, "error").as_str() {
                    "" => format!("{} ✓", esc(&field(d, "target"))),
                    e => format!("{} ✗ {}", esc(&field(d, "target")), esc(e)),
                })
                .collect();
            let notes = field(a, "notes");
            let _ = write!(
                b,
                "<tr><td><strong>{}</strong><br><small>{}</small></td><td><span class=\"badge sev-{sev}\">{sev}</span> {} {}<div class=\"detail\">{}</div>{}</td><td class=\"wide detail\">{}</td></tr>",
                esc(&field(a, "app")),
                esc(&field(a, "at")),
                action_badge(&field(a, "event")),
                from_to(
                    Some(field(a, "from")).filter(|s| !s.is_empty()).as_deref(),
                    Some(field(a, "to")).filter(|s| !s.is_empty()).as_deref()
                ),
                esc(&field(a, "reason")),
                if notes.is_empty() {
                    String::new()
                } else {
                    format!(
                        "<details><summary>release notes</summary><pre>{}</pre></details>",
                        esc(&notes)
                    )
                },
                deliveries.join("<br>"),
                sev = esc(&field(a, "severity")),
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("<p><small><a href=\"/api/infra\">as JSON</a></small></p>");
    page("infra", &b)
}

pub fn error_page(status: u16, message: &str) -> String {
    page(
        &format!("error {status}"),
        &format!("<h1>{status}</h1><p>{}</p>", esc(message)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_user_supplied() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(url_encode("a b&c"), "a%20b%26c");
    }
}
