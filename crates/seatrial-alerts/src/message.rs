//! The words of an alert for a person: the title (ntfy's `Title`, the email subject) and the body,
//! shared by ntfy and email so both say the same thing.

use std::fmt::Write as _;

use crate::{Alert, Severity};

/// ntfy turns a longer message into an attachment; keep alerts readable in the notification.
pub(crate) const NTFY_MESSAGE_LIMIT: usize = 4096;

/// `seatrial: traefik held (1.9.0 -> 2.0.0)`: one line, control characters replaced.
pub(crate) fn title(alert: &Alert) -> String {
    let mut title = format!("seatrial: {} {}", alert.app, alert.event);
    if let Some(versions) = versions(alert) {
        let _ = write!(title, " ({versions})");
    }
    one_line(&title)
}

/// `1.9.0 -> 2.0.0`, `to 2.0.0` or `from 1.9.0`.
fn versions(alert: &Alert) -> Option<String> {
    match (alert.from.as_deref(), alert.to.as_deref()) {
        (Some(from), Some(to)) => Some(format!("{from} -> {to}")),
        (None, Some(to)) => Some(format!("to {to}")),
        (Some(from), None) => Some(format!("from {from}")),
        (None, None) => None,
    }
}

/// The reason, then the facts, then the notes.
pub(crate) fn body(alert: &Alert) -> String {
    let mut body = String::new();
    let _ = writeln!(body, "{}", alert.reason.trim_end());
    let _ = writeln!(body);
    let _ = writeln!(body, "app: {}", alert.app);
    let _ = writeln!(body, "event: {}", alert.event);
    if let Some(versions) = versions(alert) {
        let _ = writeln!(body, "version: {versions}");
    }
    let _ = writeln!(body, "severity: {}", severity_word(alert.severity));
    if let Some(notes) = alert.notes.as_deref().filter(|n| !n.trim().is_empty()) {
        let _ = writeln!(body);
        let _ = writeln!(body, "{}", notes.trim_end());
    }
    body
}

pub(crate) fn severity_word(severity: Severity) -> &'static str {
    match severity {
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// `text` cut to at most `limit` bytes on a character boundary, saying so when it was cut.
pub(crate) fn truncate(text: &str, limit: usize) -> String {
    const MARK: &str = "\n… (cut)";
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// Control characters (newlines included) become spaces, so a value fits in one header line.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            event: "held".into(),
            app: "traefik".into(),
            from: Some("1.9.0".into()),
            to: Some("2.0.0".into()),
            reason: "2.0.0 is a new major version".into(),
            notes: Some("Breaking: entrypoints renamed.".into()),
            severity: Severity::Warning,
        }
    }

    #[test]
    fn title_names_app_event_and_versions() {
        assert_eq!(title(&alert()), "seatrial: traefik held (1.9.0 -> 2.0.0)");
        let only_to = Alert {
            from: None,
            ..alert()
        };
        assert_eq!(title(&only_to), "seatrial: traefik held (to 2.0.0)");
        let none = Alert {
            from: None,
            to: None,
            event: "rolled\nback".into(),
            ..alert()
        };
        assert_eq!(title(&none), "seatrial: traefik rolled back");
    }

    #[test]
    fn body_carries_reason_versions_and_notes() {
        assert_eq!(
            body(&alert()),
            "2.0.0 is a new major version\n\napp: traefik\nevent: held\nversion: 1.9.0 -> 2.0.0\nseverity: warning\n\nBreaking: entrypoints renamed.\n"
        );
    }

    #[test]
    fn truncate_keeps_char_boundaries_and_the_limit() {
        let text = "é".repeat(3000);
        let cut = truncate(&text, NTFY_MESSAGE_LIMIT);
        assert!(cut.len() <= NTFY_MESSAGE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with("(cut)"));
        assert_eq!(truncate("short", NTFY_MESSAGE_LIMIT), "short");
    }
}
