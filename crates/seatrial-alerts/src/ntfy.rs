//! The ntfy target: the message as the body of a POST to `<url>/<topic>`, with ntfy's `Title`,
//! `Priority` and `Tags` headers.

use base64::Engine as _;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};

use crate::config::{ntfy_topic_url, resolve_secret};
use crate::http::{accepted, client, request_failed};
use crate::message::{self, NTFY_MESSAGE_LIMIT};
use crate::{Alert, AlertError, Secret, Severity};

pub(crate) async fn send(
    described: &str,
    url: &str,
    topic: &str,
    token: Option<&Secret>,
    token_env: Option<&str>,
    alert: &Alert,
) -> Result<(), AlertError> {
    let config_error = |problem: String| AlertError::Config {
        target: described.to_string(),
        problem,
    };
    let base =
        Url::parse(url).map_err(|err| config_error(format!("`url` is not a URL ({err})")))?;
    let token = resolve_secret(token, "token_env", token_env).map_err(config_error)?;

    let mut request = client(described)?
        .post(ntfy_topic_url(&base, topic))
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("Title", header_text(&message::title(alert)))
        .header("Priority", priority(alert.severity))
        .header("Tags", header_text(&tags(alert)))
        .body(message::truncate(&message::body(alert), NTFY_MESSAGE_LIMIT));
    let secrets: Vec<&str> = token.iter().map(|t| t.expose()).collect();
    if let Some(token) = &token {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                config_error(
                    "the token has characters that cannot go in an HTTP header".to_string(),
                )
            })?;
        value.set_sensitive(true);
        request = request.header(AUTHORIZATION, value);
    }
    let response = request
        .send()
        .await
        .map_err(|err| request_failed(described, err, &secrets))?;
    accepted(described, response, &secrets).await
}

/// ntfy's 1–5 scale: a critical alert is 5 ("urgent": long vibration, bypasses Do Not Disturb
/// where the phone allows), a warning 4 ("high").
fn priority(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "5",
        Severity::Warning => "4",
    }
}

/// An emoji tag first (ntfy shows `rotating_light` as 🚨 and `warning` as ⚠️), then `seatrial`,
/// the app and the event; commas, which separate tags, are dropped from the last two.
fn tags(alert: &Alert) -> String {
    let emoji = match alert.severity {
        Severity::Critical => "rotating_light",
        Severity::Warning => "warning",
    };
    let mut tags = vec![emoji.to_string(), "seatrial".to_string()];
    for tag in [&alert.app, &alert.event] {
        let tag = tag.replace(',', " ").trim().to_string();
        if !tag.is_empty() {
            tags.push(tag);
        }
    }
    tags.join(",")
}

/// A header value on one line; RFC 2047 encoded (`=?UTF-8?B?…?=`, which ntfy decodes) when it is
/// not plain ASCII, since HTTP headers carry no character set.
fn header_text(text: &str) -> String {
    let line = message::one_line(text);
    if line.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        line
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(line.as_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_encodes_what_is_not_ascii() {
        assert_eq!(
            header_text("seatrial: traefik held"),
            "seatrial: traefik held"
        );
        assert_eq!(header_text("a\nb"), "a b");
        assert_eq!(header_text("café"), "=?UTF-8?B?Y2Fmw6k=?=");
    }

    #[test]
    fn tags_lead_with_the_severity_emoji() {
        let alert = Alert {
            event: "rolled back".into(),
            app: "a,b".into(),
            from: None,
            to: None,
            reason: "r".into(),
            notes: None,
            severity: Severity::Critical,
        };
        assert_eq!(tags(&alert), "rotating_light,seatrial,a b,rolled back");
    }
}
