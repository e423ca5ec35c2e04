//! What the webhook and ntfy targets share: the HTTP client, and turning a failed request or a
//! non-2xx answer into an [`AlertError`].

use reqwest::{Response, StatusCode};

use crate::error::{AlertError, chain, scrub};

/// How much of a refusing server's answer goes into the error: enough for ntfy's
/// `{"code":40101,"http":401,"error":"unauthorized"}`, not a whole error page.
const ANSWER_EXCERPT: usize = 300;

/// A client per delivery: alerts are rare, and a client kept across deliveries would hold
/// connections on whichever runtime made them.
pub(crate) fn client(target: &str) -> Result<reqwest::Client, AlertError> {
    reqwest::Client::builder()
        // A POST that is redirected comes back as a GET without its body: better an error that
        // asks for the final URL than an alert lost with a 200.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("seatrial-alerts/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| AlertError::Unreachable {
            target: target.to_string(),
            detail: format!("could not set up the HTTP client: {}", chain(&err, &[])),
        })
}

/// A request that got no answer. The URL is left out: the target's description names the server
/// without the parts of the URL that may be secret.
pub(crate) fn request_failed(target: &str, err: reqwest::Error, secrets: &[&str]) -> AlertError {
    AlertError::Unreachable {
        target: target.to_string(),
        detail: chain(&err.without_url(), secrets),
    }
}

/// `Ok` for a 2xx answer; otherwise an error with the status, the start of the answer and a hint.
pub(crate) async fn accepted(
    target: &str,
    response: Response,
    secrets: &[&str],
) -> Result<(), AlertError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let mut answer = excerpt(response).await;
    if status.is_redirection()
        && let Some(location) = location
    {
        answer = format!("redirect to {location}");
    }
    let answer = scrub(&answer, secrets);
    Err(AlertError::Rejected {
        target: target.to_string(),
        status: status.as_u16(),
        answer: if answer.is_empty() {
            String::new()
        } else {
            format!(": {answer}")
        },
        hint: hint(status),
    })
}

fn hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        300..=399 => "the URL redirects: put the final URL (often https://) in the config",
        401 | 403 => {
            "the server refused seatrial's credentials: check the token and its access to this URL or topic"
        }
        404 => "check the URL (and the topic)",
        413 => "the alert is larger than the server accepts",
        429 => "the server is rate-limiting seatrial: raise its limit or send fewer alerts",
        400..=499 => "the server refused the request: check the URL and what the server expects",
        _ => "the server failed: check its logs, and try again when it is healthy",
    }
}

/// The start of the body, on one line; empty when there is none or it cannot be read.
async fn excerpt(mut response: Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ANSWER_EXCERPT {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > ANSWER_EXCERPT {
        let mut end = ANSWER_EXCERPT;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}
