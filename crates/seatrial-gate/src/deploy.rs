//! Deploying to production, waiting for readiness, and rolling back: the [`Deployer`] trait, its
//! deploy-API implementation ([`HookDeployer`]; `kind = "swarm"` is in `swarm`), and the
//! readiness poll that decides whether a deploy is good.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use seatrial_engine::fmt_duration;

use crate::config::{ConfigError, HookConfig};
use crate::redact::{excerpt, redact_url, scrub};
use crate::{ErrorKind, StageFailure};

/// How much of an answer's body a report keeps.
const BODY_EXCERPT: usize = 2048;
/// Deadline of one deploy or rollback request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline of one readiness request.
const READY_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Readiness polls back off from the first delay to the last.
const READY_FIRST_DELAY: Duration = Duration::from_millis(500);
const READY_MAX_DELAY: Duration = Duration::from_secs(5);

/// Why a deploy failed, and whether production may have changed anyway.
#[derive(Debug)]
pub struct DeployError {
    pub failure: StageFailure,
    /// `true` when the request certainly had no effect (refused with a 4xx, never reached the
    /// API): there is nothing to roll back.
    pub nothing_deployed: bool,
}

/// Something that deploys the change to production and can take it back.
#[async_trait::async_trait]
pub trait Deployer: Send + Sync {
    /// Starts the deploy; `Ok` carries the detail for the report.
    async fn deploy(&self) -> Result<String, DeployError>;
    /// Whether [`Deployer::rollback`] can do anything (without it the gate alerts only).
    fn can_roll_back(&self) -> bool;
    /// Puts production back on the version before the deploy.
    async fn rollback(&self) -> Result<String, StageFailure>;
    /// The app answered ready: the deploy is good (a deployer that keeps a last-good release
    /// records it here). `Ok` carries the detail for the report.
    async fn confirm(&self) -> Result<String, StageFailure> {
        Ok(String::new())
    }
}

/// `kind = "hook"`: a deploy API (Dokploy-style) called with a bearer token.
pub struct HookDeployer {
    config: HookConfig,
    token: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for HookDeployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookDeployer")
            .field("url", &shown(&self.config.url))
            .field("token_env", &self.config.token_env)
            .finish_non_exhaustive()
    }
}

impl HookDeployer {
    /// Reads the token from `$token_env` (through `env`, so tests need not touch the process's
    /// environment); an unset or empty variable is an error naming it.
    pub fn new(
        config: &HookConfig,
        file: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let token = env(&config.token_env).filter(|t| !t.is_empty()).ok_or_else(|| ConfigError {
            file: file.to_owned(),
            key: "gate.deploy.token_env".into(),
            problem: format!("the environment variable {} is not set (or empty)", config.token_env),
            fix: format!(
                "export {} with the deploy API's token (in CI: a secret variable) before `seatrial gate` deploys",
                config.token_env
            ),
        })?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ConfigError {
                file: file.to_owned(),
                key: "gate.deploy".into(),
                problem: format!("cannot make an HTTP client: {e}"),
                fix: "check the machine's TLS setup".into(),
            })?;
        Ok(Self {
            config: config.clone(),
            token,
            client,
        })
    }

    /// POSTs the body to `url` with the token; the answer's status and a bounded, scrubbed
    /// excerpt of its body go in the detail.
    async fn post(&self, url: &str) -> Result<String, DeployError> {
        let sent = self
            .client
            .post(url)
            .bearer_auth(&self.token)
            .header(CONTENT_TYPE, "application/json")
            .body(self.config.body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                return Err(DeployError {
                    nothing_deployed: e.is_connect(),
                    failure: StageFailure::Error(
                        format!(
                            "POST {}: no answer: {}; check the URL and that the deploy API is reachable from here",
                            shown(url),
                            self.scrub(&error_chain(&e))
                        ),
                        ErrorKind::Infrastructure,
                    ),
                });
            }
        };
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let answer = format!(
            "POST {} answered {}: {}",
            shown(url),
            status_text(status),
            excerpt(&self.scrub(&body), BODY_EXCERPT)
        );
        if status.is_success() {
            return Ok(answer);
        }
        let fix = match status.as_u16() {
            401 | 403 => format!(
                "; check the token in {} and its permissions",
                self.config.token_env
            ),
            404 => "; check the URL and the ids in body".to_owned(),
            _ => String::new(),
        };
        Err(DeployError {
            nothing_deployed: status.is_client_error(),
            failure: StageFailure::Fail(format!("{answer}{fix}")),
        })
    }

    fn scrub(&self, text: &str) -> String {
        scrub(text, &self.token)
    }
}

#[async_trait::async_trait]
impl Deployer for HookDeployer {
    async fn deploy(&self) -> Result<String, DeployError> {
        self.post(&self.config.url).await
    }

    fn can_roll_back(&self) -> bool {
        self.config.rollback_url.is_some()
    }

    async fn rollback(&self) -> Result<String, StageFailure> {
        let Some(url) = &self.config.rollback_url else {
            return Err(StageFailure::Fail(NO_ROLLBACK.into()));
        };
        self.post(url).await.map_err(|e| e.failure)
    }
}

/// What the rollback stage says when there is no way back.
pub const NO_ROLLBACK: &str = "no rollback_url: alert only — production may be running the change that failed; roll it back by hand, or set gate.deploy.rollback_url";

/// Polls `url` until it answers exactly 200 (redirects are answers, not followed) or `timeout`
/// passes; the failure says the last status or error seen.
pub async fn wait_ready(url: &str, timeout: Duration) -> Result<String, StageFailure> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            StageFailure::Error(
                format!("cannot make an HTTP client: {e}"),
                ErrorKind::Infrastructure,
            )
        })?;
    let started = Instant::now();
    let deadline = started + timeout;
    let mut delay = READY_FIRST_DELAY;
    let mut attempts = 0u32;
    let mut last = "nothing (no attempt finished)".to_owned();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        attempts += 1;
        let per_request = remaining.min(READY_REQUEST_TIMEOUT);
        match tokio::time::timeout(per_request, client.get(url).send()).await {
            Ok(Ok(r)) if r.status() == StatusCode::OK => {
                return Ok(format!(
                    "{} answered 200 after {} ({attempts} attempt(s))",
                    shown(url),
                    fmt_duration(started.elapsed())
                ));
            }
            Ok(Ok(r)) => {
                last = match r.headers().get(LOCATION).and_then(|l| l.to_str().ok()) {
                    Some(to) if r.status().is_redirection() => {
                        format!(
                            "{} to {} (redirects are not followed)",
                            status_text(r.status()),
                            shown(to)
                        )
                    }
                    _ => status_text(r.status()),
                };
            }
            Ok(Err(e)) => last = format!("no answer: {}", error_chain(&e)),
            Err(_) => last = format!("no answer within {}", fmt_duration(per_request)),
        }
        tracing::debug!(url = %shown(url), last = %last, "not ready yet");
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(delay.min(remaining)).await;
        delay = (delay * 2).min(READY_MAX_DELAY);
    }
    Err(StageFailure::Fail(format!(
        "{} did not answer 200 within {}: last answer {last} ({attempts} attempt(s))",
        shown(url),
        fmt_duration(timeout)
    )))
}

/// A URL as reports show it (credentials redacted).
fn shown(url: &str) -> String {
    redact_url(url).unwrap_or_else(|| "<not a URL>".to_owned())
}

fn status_text(s: StatusCode) -> String {
    match s.canonical_reason() {
        Some(r) => format!("{} {r}", s.as_u16()),
        None => s.as_u16().to_string(),
    }
}

/// An error with its causes (reqwest's own text is often just "error sending request"), without
/// the URL (named by the caller, redacted).
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    if let Some(u) = e.url() {
        out = out
            .replace(&format!(" for url ({u})"), "")
            .replace(u.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}
