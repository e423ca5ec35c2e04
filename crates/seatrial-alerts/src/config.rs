//! The `[[alerts]]` entries of the server config: what each target needs, checked before use, and
//! described without its secrets.

use std::fmt;

use lettre::message::Mailbox;
use reqwest::Url;
use serde::{Deserialize, Deserializer};

/// A token or password: `Debug` prints `***`, and there is no `Display` or `Serialize`, so it
/// cannot end up in a log line or an API answer by accident.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// One `[[alerts]]` entry. See the crate documentation for what each kind sends.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum AlertTarget {
    Webhook {
        /// `http(s)://…`; the JSON alert is POSTed to it.
        url: String,
    },
    Ntfy {
        /// The ntfy server, e.g. `https://ntfy.sh`.
        url: String,
        /// Published to as `<url>/<topic>`.
        topic: String,
        /// An access token, sent as `Authorization: Bearer`.
        #[serde(default)]
        token: Option<Secret>,
        /// The name of an environment variable holding the token, instead of `token`.
        #[serde(default)]
        token_env: Option<String>,
    },
    Email {
        /// The SMTP server's host name (also the name its TLS certificate must carry).
        host: String,
        /// 587 (submission) unless given.
        #[serde(default = "default_smtp_port")]
        port: u16,
        /// Require STARTTLS before anything else is sent (the default); `false` for a plain
        /// local relay.
        #[serde(default = "default_starttls")]
        starttls: bool,
        /// Authenticate as this user; no authentication without it.
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<Secret>,
        /// The name of an environment variable holding the password, instead of `password`.
        #[serde(default)]
        password_env: Option<String>,
        /// The sender, `seatrial@example.org` or `Seatrial <seatrial@example.org>`.
        from: String,
        /// The recipients: one address or a list.
        #[serde(deserialize_with = "one_or_many")]
        to: Vec<String>,
    },
}

fn default_smtp_port() -> u16 {
    587
}

fn default_starttls() -> bool {
    true
}

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "an address or a list of addresses")]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

impl AlertTarget {
    /// `webhook`, `ntfy` or `email`, as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            AlertTarget::Webhook { .. } => "webhook",
            AlertTarget::Ntfy { .. } => "ntfy",
            AlertTarget::Email { .. } => "email",
        }
    }

    /// Checks everything that can be checked without sending: URLs, topic, addresses, port, and
    /// that a secret named by `token_env` / `password_env` is set. The message names the field.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            AlertTarget::Webhook { url } => {
                http_url("url", url)?;
                Ok(())
            }
            AlertTarget::Ntfy {
                url,
                topic,
                token,
                token_env,
            } => {
                let parsed = http_url("url", url)?;
                if parsed.query().is_some() || parsed.fragment().is_some() {
                    return Err(format!(
                        "`url` = {:?} has a query or fragment; give the ntfy server's base URL, such as https://ntfy.sh, and the topic in `topic`",
                        redacted_url(&parsed)
                    ));
                }
                if !is_ntfy_topic(topic) {
                    return Err(format!(
                        "`topic` = {topic:?} is not an ntfy topic: use 1 to 64 letters, digits, `-` or `_`"
                    ));
                }
                secret_source("token", token.as_ref(), "token_env", token_env.as_deref())?;
                Ok(())
            }
            AlertTarget::Email {
                host,
                port,
                starttls: _,
                username,
                password,
                password_env,
                from,
                to,
            } => {
                if host.trim().is_empty() {
                    return Err("`host` is empty: give the SMTP server's host name".to_string());
                }
                if host.contains("://") || host.contains(char::is_whitespace) || host.contains('/')
                {
                    return Err(format!(
                        "`host` = {host:?} is not a host name: give just the name, such as smtp.example.org, and the port in `port`"
                    ));
                }
                if *port == 0 {
                    return Err(
                        "`port` is 0: use the server's SMTP port, usually 587 (STARTTLS) or 25"
                            .to_string(),
                    );
                }
                mailbox("from", from)?;
                if to.is_empty() {
                    return Err("`to` is empty: give at least one recipient address".to_string());
                }
                for address in to {
                    mailbox("to", address)?;
                }
                let has_password = secret_source(
                    "password",
                    password.as_ref(),
                    "password_env",
                    password_env.as_deref(),
                )?;
                match (username, has_password) {
                    (Some(user), _) if user.is_empty() => Err(
                        "`username` is empty: give the SMTP user, or leave `username` out for a server without authentication"
                            .to_string(),
                    ),
                    (Some(_), false) => Err(
                        "`username` is set without `password` or `password_env`: add one, or leave `username` out for a server without authentication"
                            .to_string(),
                    ),
                    (None, true) => Err(
                        "a password is set without `username`: add the SMTP user as `username`"
                            .to_string(),
                    ),
                    _ => Ok(()),
                }
            }
        }
    }

    /// A short name for this target for logs, errors and the API, with no secret in it:
    /// `webhook https://hooks.example.org/…` (a webhook's path often is the secret, so only its
    /// origin is shown), `ntfy https://ntfy.sh/seatrial`,
    /// `email smtp.example.org:587 to ops@example.org`.
    pub fn describe(&self) -> String {
        match self {
            AlertTarget::Webhook { url } => match Url::parse(url) {
                Ok(parsed) => {
                    let origin = origin(&parsed);
                    if parsed.path() == "/" && parsed.query().is_none() {
                        format!("webhook {origin}")
                    } else {
                        format!("webhook {origin}/…")
                    }
                }
                Err(_) => "webhook (url not valid)".to_string(),
            },
            AlertTarget::Ntfy { url, topic, .. } => match Url::parse(url) {
                Ok(parsed) => format!("ntfy {}", redacted_url(&ntfy_topic_url(&parsed, topic))),
                Err(_) => format!("ntfy (url not valid) topic {topic}"),
            },
            AlertTarget::Email { host, port, to, .. } => {
                let recipients: Vec<String> = to
                    .iter()
                    .map(|address| match address.parse::<Mailbox>() {
                        Ok(mailbox) => mailbox.email.to_string(),
                        Err(_) => address.clone(),
                    })
                    .collect();
                format!("email {host}:{port} to {}", recipients.join(", "))
            }
        }
    }
}

/// `scheme://host[:port]`, without user info, path or query.
fn origin(url: &Url) -> String {
    let mut origin = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        origin.push_str(&format!(":{port}"));
    }
    origin
}

/// The URL without user info, query or fragment.
fn redacted_url(url: &Url) -> String {
    format!("{}{}", origin(url), url.path().trim_end_matches('/'))
}

/// `<url>/<topic>`, keeping a path prefix of a self-hosted server (`https://host/ntfy`).
pub(crate) fn ntfy_topic_url(base: &Url, topic: &str) -> Url {
    let mut url = base.clone();
    let path = format!("{}/{topic}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    url
}

fn is_ntfy_topic(topic: &str) -> bool {
    (1..=64).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn http_url(field: &str, url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|err| {
        format!("`{field}` is not a URL ({err}): give a full URL such as https://example.org/path")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "`{field}` has scheme {:?}: only http:// and https:// URLs are supported",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{field}` has no host"));
    }
    Ok(parsed)
}

fn mailbox(field: &str, address: &str) -> Result<Mailbox, String> {
    address.parse::<Mailbox>().map_err(|err| {
        format!("`{field}` = {address:?} is not an email address ({err}): write it as ops@example.org or Ops <ops@example.org>")
    })
}

/// Checks that at most one of an inline secret and an environment variable naming one is given,
/// and that the variable is set. Returns whether a secret is configured at all.
fn secret_source(
    field: &str,
    inline: Option<&Secret>,
    env_field: &str,
    env: Option<&str>,
) -> Result<bool, String> {
    match (inline, env) {
        (Some(_), Some(_)) => Err(format!(
            "both `{field}` and `{env_field}` are set: keep one"
        )),
        (Some(secret), None) if secret.expose().is_empty() => Err(format!(
            "`{field}` is empty: give the {field}, or leave it out"
        )),
        (Some(_), None) => Ok(true),
        (None, Some(var)) => {
            read_env_secret(env_field, var)?;
            Ok(true)
        }
        (None, None) => Ok(false),
    }
}

/// The value of the environment variable `var`, named in the config by `env_field`.
pub(crate) fn read_env_secret(env_field: &str, var: &str) -> Result<Secret, String> {
    if var.is_empty() {
        return Err(format!(
            "`{env_field}` is empty: give the name of the environment variable holding the secret"
        ));
    }
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Ok(Secret(value)),
        Ok(_) => Err(format!(
            "`{env_field}` names the environment variable {var}, which is empty: set it in seatrial's environment"
        )),
        Err(std::env::VarError::NotPresent) => Err(format!(
            "`{env_field}` names the environment variable {var}, which is not set: set it in seatrial's environment"
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "`{env_field}` names the environment variable {var}, which is not valid UTF-8"
        )),
    }
}

/// The secret configured inline or through `env_field`, if any.
pub(crate) fn resolve_secret(
    inline: Option<&Secret>,
    env_field: &str,
    env: Option<&str>,
) -> Result<Option<Secret>, String> {
    match (inline, env) {
        (Some(secret), _) => Ok(Some(secret.clone())),
        (None, Some(var)) => read_env_secret(env_field, var).map(Some),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<AlertTarget, String> {
        #[derive(Deserialize)]
        struct File {
            alerts: Vec<AlertTarget>,
        }
        let mut file: File = toml::from_str(toml_text).map_err(|err| err.to_string())?;
        Ok(file.alerts.remove(0))
    }

    #[test]
    fn parses_the_three_kinds_as_documented() {
        let webhook = parse(
            r#"
            [[alerts]]
            kind = "webhook"
            url = "https://hooks.example.org/seatrial"
            "#,
        )
        .expect("valid");
        assert!(
            matches!(&webhook, AlertTarget::Webhook { url } if url == "https://hooks.example.org/seatrial")
        );
        webhook.validate().expect("valid");

        let ntfy = parse(
            r#"
            [[alerts]]
            kind = "ntfy"
            url = "https://ntfy.sh"
            topic = "seatrial"
            token = "tk_secret"
            "#,
        )
        .expect("valid");
        assert!(
            matches!(&ntfy, AlertTarget::Ntfy { topic, token: Some(token), .. } if topic == "seatrial" && token.expose() == "tk_secret")
        );
        ntfy.validate().expect("valid");

        let email = parse(
            r#"
            [[alerts]]
            kind = "email"
            host = "smtp.example.org"
            port = 587
            starttls = true
            username = "seatrial"
            password = "hunter2"
            from = "seatrial@example.org"
            to = ["ops@example.org", "Second <second@example.org>"]
            "#,
        )
        .expect("valid");
        let AlertTarget::Email {
            to, port, starttls, ..
        } = &email
        else {
            panic!("not email: {email:?}");
        };
        assert_eq!(to, &["ops@example.org", "Second <second@example.org>"]);
        assert_eq!((*port, *starttls), (587, true));
        email.validate().expect("valid");
    }

    #[test]
    fn email_to_accepts_a_single_address_and_defaults_port_and_starttls() {
        let email = parse(
            r#"
            [[alerts]]
            kind = "email"
            host = "smtp.example.org"
            from = "seatrial@example.org"
            to = "ops@example.org"
            "#,
        )
        .expect("valid");
        let AlertTarget::Email {
            to,
            port,
            starttls,
            username,
            ..
        } = &email
        else {
            panic!("not email: {email:?}");
        };
        assert_eq!(to, &["ops@example.org"]);
        assert_eq!((*port, *starttls, username), (587, true, &None));
        email.validate().expect("valid");
    }

    #[test]
    fn unknown_kinds_and_fields_are_refused() {
        let err =
            parse("[[alerts]]\nkind = \"pager\"\nurl = \"https://x.org\"\n").expect_err("refused");
        assert!(err.contains("pager"), "{err}");
        let err =
            parse("[[alerts]]\nkind = \"webhook\"\nurl = \"https://x.org\"\nsecret = \"x\"\n")
                .expect_err("refused");
        assert!(err.contains("secret"), "{err}");
    }

    #[test]
    fn validate_names_the_field_at_fault() {
        let cases = [
            (
                AlertTarget::Webhook {
                    url: "ftp://example.org".into(),
                },
                "`url`",
            ),
            (
                AlertTarget::Webhook {
                    url: "not a url".into(),
                },
                "`url`",
            ),
            (ntfy("https://ntfy.sh", "", None, None), "`topic`"),
            (ntfy("https://ntfy.sh", "a/b", None, None), "`topic`"),
            (
                ntfy("https://ntfy.sh", &"x".repeat(65), None, None),
                "`topic`",
            ),
            (
                ntfy("https://ntfy.sh", "ok", Some("t"), Some("SEATRIAL_T")),
                "`token_env`",
            ),
            (
                ntfy(
                    "https://ntfy.sh",
                    "ok",
                    None,
                    Some("SEATRIAL_ALERTS_SURELY_UNSET"),
                ),
                "SEATRIAL_ALERTS_SURELY_UNSET",
            ),
            (ntfy("https://ntfy.sh", "ok", Some(""), None), "`token`"),
            (ntfy("https://ntfy.sh/?x=1", "ok", None, None), "`url`"),
            (email(|e| set_host(e, "")), "`host`"),
            (email(|e| set_host(e, "smtp://smtp.example.org")), "`host`"),
            (email(|e| set_port(e, 0)), "`port`"),
            (email(|e| set_from(e, "not an address")), "`from`"),
            (email(|e| set_to(e, vec![])), "`to`"),
            (
                email(|e| set_to(e, vec!["ops@example.org".into(), "@@".into()])),
                "`to`",
            ),
            (email(|e| set_auth(e, Some("u"), None)), "`password`"),
            (email(|e| set_auth(e, None, Some("p"))), "`username`"),
        ];
        for (target, field) in cases {
            let err = target.validate().expect_err(&format!("{target:?} passed"));
            assert!(
                err.contains(field),
                "{target:?}: {err:?} does not name {field}"
            );
        }
    }

    #[test]
    fn token_env_is_read_from_the_environment() {
        // A variable every test process has, so no test needs to set one (set_var is unsafe).
        let target = ntfy("https://ntfy.sh", "ok", None, Some("PATH"));
        target.validate().expect("valid");
        let secret = resolve_secret(None, "token_env", Some("PATH"))
            .expect("valid")
            .expect("a token");
        assert_eq!(Some(secret.expose()), std::env::var("PATH").ok().as_deref());
    }

    #[test]
    fn secrets_are_hidden_from_debug_and_describe() {
        let targets = [
            ntfy("https://ntfy.sh", "seatrial", Some("tk_topsecret"), None),
            email(|e| set_auth(e, Some("seatrial"), Some("topsecret"))),
        ];
        for target in targets {
            let debug = format!("{target:?}");
            let pretty = format!("{target:#?}");
            let described = target.describe();
            for shown in [&debug, &pretty, &described] {
                assert!(!shown.contains("topsecret"), "secret shown: {shown}");
            }
            assert!(debug.contains("\"***\""), "{debug}");
        }
    }

    #[test]
    fn describe_names_the_target_without_webhook_paths_or_user_info() {
        let webhook = AlertTarget::Webhook {
            url: "https://user:pw@hooks.example.org/services/T0/B0/XYZ?key=1".into(),
        };
        assert_eq!(webhook.describe(), "webhook https://hooks.example.org/…");
        let bare = AlertTarget::Webhook {
            url: "http://127.0.0.1:8080".into(),
        };
        assert_eq!(bare.describe(), "webhook http://127.0.0.1:8080");
        assert_eq!(
            ntfy("https://ntfy.example.org/base/", "seatrial", None, None).describe(),
            "ntfy https://ntfy.example.org/base/seatrial"
        );
        assert_eq!(
            email(|e| set_to(
                e,
                vec!["Ops <ops@example.org>".into(), "b@example.org".into()]
            ))
            .describe(),
            "email smtp.example.org:587 to ops@example.org, b@example.org"
        );
    }

    fn ntfy(url: &str, topic: &str, token: Option<&str>, token_env: Option<&str>) -> AlertTarget {
        AlertTarget::Ntfy {
            url: url.into(),
            topic: topic.into(),
            token: token.map(Secret::new),
            token_env: token_env.map(String::from),
        }
    }

    fn email(change: impl FnOnce(&mut AlertTarget)) -> AlertTarget {
        let mut target = AlertTarget::Email {
            host: "smtp.example.org".into(),
            port: 587,
            starttls: true,
            username: None,
            password: None,
            password_env: None,
            from: "seatrial@example.org".into(),
            to: vec!["ops@example.org".into()],
        };
        change(&mut target);
        target
    }

    fn set_host(target: &mut AlertTarget, value: &str) {
        if let AlertTarget::Email { host, .. } = target {
            *host = value.into();
        }
    }

    fn set_port(target: &mut AlertTarget, value: u16) {
        if let AlertTarget::Email { port, .. } = target {
            *port = value;
        }
    }

    fn set_from(target: &mut AlertTarget, value: &str) {
        if let AlertTarget::Email { from, .. } = target {
            *from = value.into();
        }
    }

    fn set_to(target: &mut AlertTarget, value: Vec<String>) {
        if let AlertTarget::Email { to, .. } = target {
            *to = value;
        }
    }

    fn set_auth(target: &mut AlertTarget, user: Option<&str>, pass: Option<&str>) {
        if let AlertTarget::Email {
            username, password, ..
        } = target
        {
            *username = user.map(String::from);
            *password = pass.map(Secret::new);
        }
    }
}
