//! The email target: one plain-text message over SMTP, STARTTLS required unless the config says
//! the relay is plain.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::resolve_secret;
use crate::error::chain;
use crate::message;
use crate::{Alert, AlertError, Secret, Severity};

/// The email fields of an [`crate::AlertTarget::Email`], borrowed.
pub(crate) struct Smtp<'a> {
    pub host: &'a str,
    pub port: u16,
    pub starttls: bool,
    pub username: Option<&'a str>,
    pub password: Option<&'a Secret>,
    pub password_env: Option<&'a str>,
    pub from: &'a str,
    pub to: &'a [String],
}

pub(crate) async fn send(
    described: &str,
    smtp: Smtp<'_>,
    alert: &Alert,
    timeout: Duration,
) -> Result<(), AlertError> {
    let config_error = |problem: String| AlertError::Config {
        target: described.to_string(),
        problem,
    };
    let email = build_message(described, &smtp, alert)?;

    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host)
        .port(smtp.port)
        .timeout(Some(timeout));
    transport = if smtp.starttls {
        let tls = TlsParameters::new(smtp.host.to_string()).map_err(|err| AlertError::Smtp {
            target: described.to_string(),
            detail: chain(&err, &[]),
            hint: "could not set up TLS for `host`",
        })?;
        transport.tls(Tls::Required(tls))
    } else {
        transport.tls(Tls::None)
    };
    let password =
        resolve_secret(smtp.password, "password_env", smtp.password_env).map_err(config_error)?;
    if let Some(username) = smtp.username {
        let password = password.as_ref().ok_or_else(|| {
            config_error("`username` is set without `password` or `password_env`".to_string())
        })?;
        transport = transport.credentials(Credentials::new(
            username.to_string(),
            password.expose().to_string(),
        ));
    }
    let secrets: Vec<&str> = password.iter().map(|p| p.expose()).collect();

    transport
        .build()
        .send(email)
        .await
        .map(|_response| ())
        .map_err(|err| AlertError::Smtp {
            target: described.to_string(),
            detail: chain(&err, &secrets),
            hint: hint(&err, smtp.starttls),
        })
}

fn build_message(described: &str, smtp: &Smtp<'_>, alert: &Alert) -> Result<Message, AlertError> {
    let message_error = |detail: String| AlertError::Message {
        target: described.to_string(),
        detail,
    };
    let mailbox = |field: &str, address: &str| {
        address
            .parse::<Mailbox>()
            .map_err(|err| message_error(format!("`{field}` = {address:?}: {err}")))
    };
    let subject = match alert.severity {
        Severity::Critical => format!("[critical] {}", message::title(alert)),
        Severity::Warning => message::title(alert),
    };
    let mut builder = Message::builder()
        // A Message-ID on the sender's side; some spam filters score its absence.
        .message_id(None)
        .from(mailbox("from", smtp.from)?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for address in smtp.to {
        builder = builder.to(mailbox("to", address)?);
    }
    let body = format!(
        "{}\n-- \nSent by seatrial to the operators of {}.\n",
        message::body(alert),
        alert.app
    );
    builder
        .body(body)
        .map_err(|err| message_error(chain(&err, &[])))
}

/// What to do about a failed SMTP conversation, as far as lettre's error tells which step failed.
fn hint(err: &lettre::transport::smtp::Error, starttls: bool) -> &'static str {
    let code = err
        .status()
        .map(|code| code.to_string())
        .unwrap_or_default();
    if err.is_timeout() {
        "the server did not answer in time: check `host` and `port`, and that it is up"
    } else if err.is_tls() {
        "TLS failed: check that the server's certificate is valid for `host`, or set `starttls = false` for a plain local relay"
    } else if code.starts_with("53") {
        "the server refused the login: check `username` and the password"
    } else if code.starts_with("55") {
        "the server refused the sender or a recipient: check `from` and `to`, and that the user may send as `from`"
    } else if err.is_transient() {
        "the server is temporarily refusing mail: it should accept it later, check its logs if it does not"
    } else if err.is_permanent() {
        "the server refused the message: check its logs"
    } else if starttls && err.is_client() {
        "the server does not offer STARTTLS (or the conversation broke): use its submission port, usually 587, or set `starttls = false` for a plain local relay"
    } else {
        "check `host` and `port`, and that the server is up and reachable from seatrial's host"
    }
}
