//! When a failed request may be sent again, and how long to wait before it: the rule that keeps
//! a retry from becoming a visible duplicate, `Retry-After`, and jitter.

use std::time::Duration;

use super::ForgeError;

/// The longest backoff between two attempts.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The longest `Retry-After` the client waits out inside one call. A forge asking for longer
/// gets the error back instead; the callers try again on their next cycle (poll, report pass).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Whether a request may be sent again after it failed: the rule that keeps a retry from
/// becoming a visible duplicate.
///
/// - [`Replay::Safe`]: sending it twice has the effect of sending it once — every GET, the PATCH
///   that sets a comment's body, the POST that sets a commit status (the latest status per
///   context wins). Retried on network errors, timeouts, 5xx and 429.
/// - [`Replay::Once`]: the POST that creates a comment. A second copy would be a second comment
///   on the pull request. After a network error or a timeout the request may have reached the
///   forge and been processed, so it is **not** retried; nor after 500, 502 or 504 (the forge or
///   its proxy may have created the comment before failing). It is retried only when the request
///   provably did not create anything: the connection could not be opened at all, or the answer
///   was 429 or 503 (refused before processing: rate limit, maintenance, overload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    Safe,
    Once,
}

/// One failed attempt: the error, and what it says about trying again.
pub(super) struct Attempt {
    pub(super) error: ForgeError,
    /// The request may have been processed (a network error after connecting, or a 5xx).
    pub(super) maybe_processed: bool,
    pub(super) transient: bool,
    pub(super) retry_after: Option<Duration>,
}

impl Attempt {
    pub(super) fn may_retry(&self, replay: Replay) -> bool {
        self.transient && (replay == Replay::Safe || !self.maybe_processed)
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3), as a wait from `now`.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait before the next attempt: what the forge asked for (with a little jitter, so clients
/// told the same time do not return at once), else the backoff's own (jittered) delay. `None`:
/// stop trying (retries used up, or the forge asked for longer than [`MAX_RETRY_AFTER`]).
pub(super) fn next_wait(asked: Option<Duration>, backoff: Option<Duration>) -> Option<Duration> {
    let backoff = backoff?;
    match asked {
        None => Some(backoff),
        Some(a) if a > MAX_RETRY_AFTER => None,
        Some(a) => {
            let spread = (a / 10).max(Duration::from_millis(50));
            let jitter = spread.mul_f64(fastrand::f64());
            Some(a + jitter)
        }
    }
}
