//! The serve probe: an HTTP GET that must answer as users would expect — the expected status
//! (2xx/3xx by default) and, when asked, a body substring — retried within a deadline.
//! The `gateway` strategy reaches the task directly through `docker_gwbridge`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What a probe asks for.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub path: String,
    /// Accepted status codes, inclusive.
    pub status: (u16, u16),
    pub body_contains: Option<String>,
    pub deadline: Duration,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        Self {
            path: "/".into(),
            status: (200, 399),
            body_contains: None,
            deadline: Duration::from_secs(60),
        }
    }
}

/// One answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Largest response read; a probe needs the status line and a little body.
const MAX_RESPONSE: usize = 256 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// `http://host[:port][/prefix]` → (host, port, prefix).
pub fn split_http_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, String::new()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (
            h.trim_matches(['[', ']']).to_owned(),
            p.parse::<u16>()
                .map_err(|_| format!("bad port in {url:?}"))?,
        ),
        _ => (authority.trim_matches(['[', ']']).to_owned(), 80),
    };
    if host.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    Ok((host, port, prefix))
}

/// One HTTP/1.1 GET to `connect:port` with `Host: host`, `Connection: close`.
pub async fn get(connect: &str, port: u16, host: &str, path: &str) -> Result<Answer, String> {
    let exchange = async {
        let mut stream = TcpStream::connect((connect, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: seatrial-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 || buf.len() >= MAX_RESPONSE {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| "no HTTP status line in the answer".to_owned())?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok(Answer { status, body })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()))?
}

/// An error with its causes, one after another (TLS problems hide in the sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Probes `base` (the operator's reverse proxy, `http://` or `https://`) for `domain` until the
/// spec is met or the deadline passes. Over HTTPS the connection goes to the proxy's address with
/// `domain` as the TLS server name and `Host`, as a browser would send it; the certificate is
/// verified unless `insecure`. Redirects are not followed: a redirect is the answer.
pub async fn until_ok_via(
    base: &str,
    domain: &str,
    spec: &ProbeSpec,
    insecure: bool,
) -> Result<Answer, String> {
    if base.starts_with("http://") {
        let (connect, port, prefix) = split_http_url(base)?;
        let spec = ProbeSpec {
            path: format!("{}{}", prefix.trim_end_matches('/'), spec.path),
            ..spec.clone()
        };
        return until_ok(&connect, port, domain, &spec).await;
    }
    let rest = base
        .strip_prefix("https://")
        .ok_or_else(|| format!("{base:?} is neither an http:// nor an https:// URL"))?;
    let (host, port, prefix) = split_http_url(&format!("http://{rest}"))?;
    let port = if rest
        .split('/')
        .next()
        .is_some_and(|a| a.contains(':') && !a.ends_with(']'))
    {
        port
    } else {
        443
    };
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let client = reqwest::Client::builder()
        .resolve(domain, addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .danger_accept_invalid_certs(insecure)
        .user_agent("seatrial-probe")
        .build()
        .map_err(|e| chain(&e))?;
    let url = format!(
        "https://{domain}:{port}{}{}",
        prefix.trim_end_matches('/'),
        spec.path
    );
    let deadline = Instant::now() + spec.deadline;
    let mut wait = Duration::from_millis(100);
    loop {
        let reason = match client.get(&url).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read no more than the cap, whatever the app sends (an endless body, say).
                let mut response = response;
                let mut bytes = Vec::new();
                while bytes.len() < MAX_RESPONSE {
                    match response.chunk().await {
                        Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                        Ok(None) | Err(_) => break,
                    }
                }
                bytes.truncate(MAX_RESPONSE);
                let answer = Answer {
                    status,
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                };
                match judge(spec, &answer) {
                    Ok(()) => return Ok(answer),
                    Err(why) => why,
                }
            }
            Err(e) => chain(&e),
        };
        if Instant::now() + wait > deadline {
            return Err(reason);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

/// Does the answer satisfy the spec? `Err` says why not.
pub fn judge(spec: &ProbeSpec, answer: &Answer) -> Result<(), String> {
    if answer.status < spec.status.0 || answer.status > spec.status.1 {
        return Err(format!(
            "status {} (expected {}-{})",
            answer.status, spec.status.0, spec.status.1
        ));
    }
    if let Some(needle) = &spec.body_contains
        && !answer.body.contains(needle.as_str())
    {
        return Err(format!(
            "status {} but the body lacks {needle:?}",
            answer.status
        ));
    }
    Ok(())
}

/// Probes until the spec is met or the deadline passes; returns the answer or the last reason.
pub async fn until_ok(
    connect: &str,
    port: u16,
    host: &str,
    spec: &ProbeSpec,
) -> Result<Answer, String> {
    let deadline = Instant::now() + spec.deadline;
    let mut wait = Duration::from_millis(100);
    loop {
        let reason = match get(connect, port, host, &spec.path).await {
            Ok(answer) => match judge(spec, &answer) {
                Ok(()) => return Ok(answer),
                Err(why) => why,
            },
            Err(e) => e,
        };
        if Instant::now() + wait > deadline {
            return Err(reason);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_http_urls() {
        assert_eq!(
            split_http_url("http://proxy"),
            Ok(("proxy".into(), 80, String::new()))
        );
        assert_eq!(
            split_http_url("http://10.0.0.1:8080/app/"),
            Ok(("10.0.0.1".into(), 8080, "/app/".into()))
        );
        assert_eq!(
            split_http_url("http://[::1]:81"),
            Ok(("::1".into(), 81, String::new()))
        );
        assert!(split_http_url("https://x").is_err());
        assert!(split_http_url("http://:80").is_err());
    }

    #[test]
    fn judges_status_and_body() {
        let spec = ProbeSpec {
            body_contains: Some("hello".into()),
            ..ProbeSpec::default()
        };
        assert!(
            judge(
                &spec,
                &Answer {
                    status: 200,
                    body: "hello world".into()
                }
            )
            .is_ok()
        );
        assert!(
            judge(
                &spec,
                &Answer {
                    status: 404,
                    body: "hello".into()
                }
            )
            .expect_err("404")
            .contains("404")
        );
        assert!(
            judge(
                &spec,
                &Answer {
                    status: 200,
                    body: "default backend".into()
                }
            )
            .is_err()
        );
    }
}
