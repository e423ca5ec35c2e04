//! The Gitea/Forgejo transport: one `reqwest` client with the token, a timeout and no redirects;
//! every request retried as its [`Replay`] allows; GETs conditional on a cached `ETag`.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

use super::etag::EtagCache;
use super::retry::{Attempt, MAX_BACKOFF, Replay, next_wait, retry_after};
use super::{ForgeError, Token};

/// Gitea and Forgejo.
pub struct Gitea {
    pub(super) base: String,
    token: Token,
    http: reqwest::Client,
    /// URL → (ETag, body) of recent 200 answers, for `If-None-Match`; bounded.
    etags: Mutex<EtagCache>,
    /// How many HTTP requests were sent (for the poll benchmark and tests).
    requests: std::sync::atomic::AtomicU64,
    /// Retries after the first attempt, for requests that may be retried.
    retries: usize,
    /// The first backoff delay (doubling, jittered, at most [`MAX_BACKOFF`]).
    backoff: Duration,
}

impl Gitea {
    /// `base` is the forge's address (`https://git.example.org`); the API is under `/api/v1`.
    pub fn new(base: &str, token: Token, timeout: Duration) -> Result<Self, ForgeError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("seatrial/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ForgeError::Unreachable {
                what: "building the HTTP client".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            base: format!("{}/api/v1", base.trim_end_matches('/')),
            token,
            http,
            etags: Mutex::new(EtagCache::new(
                NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
                32 * 1024 * 1024,
            )),
            requests: std::sync::atomic::AtomicU64::new(0),
            retries: 3,
            backoff: Duration::from_millis(200),
        })
    }

    /// Bounds the `ETag` cache (default 1024 answers, 32 MiB).
    pub fn with_etag_cache(self, max_entries: NonZeroUsize, max_bytes: usize) -> Self {
        Self {
            etags: Mutex::new(EtagCache::new(max_entries, max_bytes)),
            ..self
        }
    }

    /// Sets how many times a failed request that may be retried is retried (default 3), and the
    /// first backoff delay (default 200 ms; doubling, jittered, at most 5 s).
    pub fn with_retries(self, retries: usize, first_backoff: Duration) -> Self {
        Self {
            retries,
            backoff: first_backoff,
            ..self
        }
    }

    /// (entries, bytes) held by the `ETag` cache.
    pub fn etag_cache_size(&self) -> (usize, usize) {
        self.etags
            .lock()
            .map(|c| (c.len(), c.bytes()))
            .unwrap_or_default()
    }

    /// A link as the forge gave it, made absolute against the forge's address.
    pub(super) fn absolute(&self, link: &str) -> String {
        if link.starts_with('/') {
            let origin = self
                .base
                .find("://")
                .and_then(|i| {
                    self.base[i + 3..]
                        .find('/')
                        .map(|j| &self.base[..i + 3 + j])
                })
                .unwrap_or(&self.base);
            format!("{origin}{link}")
        } else {
            link.to_owned()
        }
    }

    /// HTTP requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One request, retried as [`Replay`] allows; returns status, headers and body.
    pub(super) async fn send(
        &self,
        what: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<&serde_json::Value>,
        conditional: bool,
        replay: Replay,
    ) -> Result<(u16, reqwest::header::HeaderMap, String), ForgeError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.backoff)
            .with_max_delay(MAX_BACKOFF)
            .with_max_times(self.retries)
            .with_jitter();
        let attempt = || self.attempt(what, method.clone(), url, body, conditional);
        attempt
            .retry(backoff.build())
            .when(|a: &Attempt| a.may_retry(replay))
            .adjust(|a: &Attempt, wait| next_wait(a.retry_after, wait))
            .notify(|a: &Attempt, wait| {
                tracing::warn!(what, error = %a.error, wait_ms = wait.as_millis() as u64, "forge request failed; retrying");
            })
            .await
            .map_err(|a| a.error)
    }

    /// One attempt of a request.
    async fn attempt(
        &self,
        what: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<&serde_json::Value>,
        conditional: bool,
    ) -> Result<(u16, reqwest::header::HeaderMap, String), Attempt> {
        let mut request = self
            .http
            .request(method, url)
            .header("Authorization", format!("token {}", self.token.expose()))
            .header("Accept", "application/json");
        if conditional && let Some(etag) = self.etags.lock().ok().and_then(|mut m| m.etag(url)) {
            request = request.header("If-None-Match", etag);
        }
        if let Some(b) = body {
            request = request.json(b);
        }
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let text = response.text().await.unwrap_or_default();
                if status >= 500 || status == 429 {
                    Err(Attempt {
                        error: ForgeError::Status {
                            what: what.to_owned(),
                            status,
                            body: text.chars().take(300).collect(),
                        },
                        maybe_processed: !matches!(status, 429 | 503),
                        transient: true,
                        retry_after: headers
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| retry_after(v, std::time::SystemTime::now())),
                    })
                } else {
                    Ok((status, headers, text))
                }
            }
            Err(e) => Err(Attempt {
                // Only a failed connect proves the forge never saw the request.
                maybe_processed: !e.is_connect(),
                transient: true,
                retry_after: None,
                error: ForgeError::Unreachable {
                    what: what.to_owned(),
                    // reqwest errors name the URL, never the headers: the token stays out.
                    message: e.to_string(),
                },
            }),
        }
    }

    /// GET with ETag reuse; a 304 gives the cached body.
    pub(super) async fn get_json(
        &self,
        what: &str,
        url: &str,
    ) -> Result<(String, Option<String>), ForgeError> {
        let (mut status, mut headers, mut text) = self
            .send(what, reqwest::Method::GET, url, None, true, Replay::Safe)
            .await?;
        if status == 304 {
            match self.etags.lock().ok().and_then(|mut m| m.body(url)) {
                Some(cached) => return Ok((cached, None)),
                // Evicted between the request and its answer: ask again without the ETag.
                None => {
                    (status, headers, text) = self
                        .send(what, reqwest::Method::GET, url, None, false, Replay::Safe)
                        .await?;
                }
            }
        }
        let link = headers
            .get("link")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match status {
            200 => {
                if let Some(etag) = headers.get("etag").and_then(|v| v.to_str().ok())
                    && let Ok(mut m) = self.etags.lock()
                {
                    m.insert(url, etag, &text);
                }
                Ok((text, link))
            }
            other => Err(ForgeError::Status {
                what: what.to_owned(),
                status: other,
                body: text.chars().take(300).collect(),
            }),
        }
    }

    pub(super) fn decode<T: serde::de::DeserializeOwned>(
        what: &str,
        text: &str,
    ) -> Result<T, ForgeError> {
        serde_json::from_str(text).map_err(|e| ForgeError::Decode {
            what: what.to_owned(),
            message: e.to_string(),
        })
    }

    pub(super) async fn write(
        &self,
        what: &str,
        method: reqwest::Method,
        url: &str,
        body: &serde_json::Value,
        ok: &[u16],
        replay: Replay,
    ) -> Result<String, ForgeError> {
        let (status, _, text) = self
            .send(what, method, url, Some(body), false, replay)
            .await?;
        if ok.contains(&status) {
            Ok(text)
        } else {
            Err(ForgeError::Status {
                what: what.to_owned(),
                status,
                body: text.chars().take(300).collect(),
            })
        }
    }
}
