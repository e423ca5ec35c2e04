//! Alerts to operators: when seatrial holds an upgrade, rolls one back or otherwise needs a person,
//! it tells them over every target configured under `[[alerts]]` in the server config.
//!
//! Three kinds of target, each a variant of [`AlertTarget`]:
//!
//! - **webhook** — `POST <url>` with the alert as JSON,
//!   `{"event", "app", "from", "to", "reason", "notes", "severity"}` (`from`, `to` and `notes` are
//!   `null` when absent), `Content-Type: application/json`. Any 2xx answer is a delivery; anything
//!   else, redirects included, is an error naming the status.
//! - **ntfy** — `POST <url>/<topic>` following ntfy's publish API: the body is the message
//!   (reason, versions, notes; cut to ntfy's 4096-byte message limit), with headers `Title`
//!   (`seatrial: traefik held (1.9.0 -> 2.0.0)`), `Priority` (`5`, urgent, for a critical alert;
//!   `4`, high, for a warning), `Tags` (`rotating_light` or `warning`, which ntfy shows as emoji,
//!   then `seatrial`, the app and the event) and, when a token is configured,
//!   `Authorization: Bearer <token>`. Header values that are not plain ASCII are sent RFC 2047
//!   encoded, which ntfy decodes.
//! - **email** — one message over SMTP to every `to` address, subject as ntfy's title (prefixed
//!   `[critical]` for a critical alert), plain-text body with the reason, the versions and the
//!   notes. `starttls = true` (the default) requires STARTTLS, verified against the webpki roots,
//!   before anything else is sent; `starttls = false` is plain SMTP, for a relay on the same host
//!   or network. With `username`, seatrial authenticates (PLAIN or LOGIN, whichever the server
//!   offers); without, it does not.
//!
//! Secrets (the ntfy token, the SMTP password) are given in the file or, with `token_env` /
//! `password_env`, as the name of an environment variable read at each delivery. They are held in
//! [`Secret`], whose `Debug` prints `***`, and never appear in [`AlertTarget::describe`], in an
//! [`AlertError`] or in a log line.
//!
//! [`send_all`] delivers one alert to every target at once, each within [`DEFAULT_TIMEOUT`], and
//! reports one [`Delivery`] per target; it never fails as a whole, so one broken target does not
//! keep the others from being told.

mod config;
mod email;
mod error;
mod http;
mod message;
mod ntfy;
mod webhook;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};

pub use config::{AlertTarget, Secret};
pub use error::AlertError;

/// How long one delivery may take, from connecting to the server's answer, in [`send`] and
/// [`send_all`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// How urgent an alert is. ntfy maps it to a priority, email to a subject prefix; webhooks get it
/// as `"severity"`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Someone should look soon: an upgrade was held for a person to decide.
    Warning,
    /// Something broke and seatrial could not fully repair it.
    Critical,
}

/// What happened, to which app, between which versions. Serialized as the webhook body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alert {
    /// What happened, short and lowercase: `held`, `rolled back`, …
    pub event: String,
    /// The app it happened to.
    pub app: String,
    /// The version the app was on, when there is one.
    pub from: Option<String>,
    /// The version it was going to, when there is one.
    pub to: Option<String>,
    /// Why, in a sentence, for a person.
    pub reason: String,
    /// Anything longer: release notes, the failing check's output.
    pub notes: Option<String>,
    pub severity: Severity,
}

/// The outcome of one target's delivery in [`send_all`]: `error` is `None` when it was delivered.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Delivery {
    /// [`AlertTarget::describe`] of the target.
    pub target: String,
    pub error: Option<String>,
}

impl Delivery {
    pub fn is_delivered(&self) -> bool {
        self.error.is_none()
    }
}

/// Delivers `alert` to one target within [`DEFAULT_TIMEOUT`].
pub async fn send(target: &AlertTarget, alert: &Alert) -> Result<(), AlertError> {
    send_within(target, alert, DEFAULT_TIMEOUT).await
}

/// Delivers `alert` to one target, giving up after `timeout`.
///
/// The target is validated first, so a broken configuration is reported as such rather than as a
/// failed connection.
pub async fn send_within(
    target: &AlertTarget,
    alert: &Alert,
    timeout: Duration,
) -> Result<(), AlertError> {
    let described = target.describe();
    target.validate().map_err(|problem| AlertError::Config {
        target: described.clone(),
        problem,
    })?;
    let delivery = async {
        match target {
            AlertTarget::Webhook { url } => webhook::send(&described, url, alert).await,
            AlertTarget::Ntfy {
                url,
                topic,
                token,
                token_env,
            } => {
                let token_env = token_env.as_deref();
                ntfy::send(&described, url, topic, token.as_ref(), token_env, alert).await
            }
            AlertTarget::Email {
                host,
                port,
                starttls,
                username,
                password,
                password_env,
                from,
                to,
            } => {
                let smtp = email::Smtp {
                    host,
                    port: *port,
                    starttls: *starttls,
                    username: username.as_deref(),
                    password: password.as_ref(),
                    password_env: password_env.as_deref(),
                    from,
                    to,
                };
                email::send(&described, smtp, alert, timeout).await
            }
        }
    };
    match tokio::time::timeout(timeout, delivery).await {
        Ok(result) => result,
        Err(_) => Err(AlertError::Timeout {
            target: described,
            after: timeout,
        }),
    }
}

/// Delivers `alert` to every target concurrently, each within [`DEFAULT_TIMEOUT`]; one
/// [`Delivery`] per target, in the order of `targets`.
pub async fn send_all(targets: &[AlertTarget], alert: &Alert) -> Vec<Delivery> {
    send_all_within(targets, alert, DEFAULT_TIMEOUT).await
}

/// [`send_all`] with another timeout for each delivery.
pub async fn send_all_within(
    targets: &[AlertTarget],
    alert: &Alert,
    timeout: Duration,
) -> Vec<Delivery> {
    let deliveries = targets.iter().map(|target| async move {
        let described = target.describe();
        // A panic in one delivery (a bug here or in a dependency) must not take the caller, or
        // the other deliveries, down with it.
        let outcome = AssertUnwindSafe(send_within(target, alert, timeout))
            .catch_unwind()
            .await;
        let error = match outcome {
            Ok(Ok(())) => {
                tracing::info!(alert_target = %described, app = %alert.app, event = %alert.event, "alert delivered");
                None
            }
            Ok(Err(err)) => {
                tracing::warn!(alert_target = %described, app = %alert.app, event = %alert.event, error = %err, "alert not delivered");
                Some(err.to_string())
            }
            Err(_) => {
                tracing::error!(alert_target = %described, app = %alert.app, event = %alert.event, "alert delivery panicked");
                Some(format!(
                    "{described}: the delivery panicked (a bug in seatrial); the alert was not sent"
                ))
            }
        };
        Delivery {
            target: described,
            error,
        }
    });
    futures_util::future::join_all(deliveries).await
}
