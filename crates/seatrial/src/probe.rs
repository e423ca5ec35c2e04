//! `seatrial probe URL`: a GET that must answer as expected; exit 0 when it does. seatrial's
//! image is built from scratch (no shell, no curl), so its `HEALTHCHECK` and the recipe's
//! healthcheck use this — and so does a trial's probe job inside a swarm (`--host`, `--accept`,
//! `--body`, `--retry-for`): its output is what the trial shows, so it names the last answer or
//! the reason there was none.

use std::time::Duration;

use seatrial_trial::probe::{Answer, ProbeSpec, judge};
use tokio::time::Instant;

use crate::cli::ProbeArgs;
use crate::exit::{APP_FAILED, BAD_INPUT, Failure};

/// Largest body read: a probe needs the status and a little text.
const MAX_BODY: usize = 256 * 1024;

/// The error and its causes (refused, unresolvable name, TLS), or a timeout said plainly.
fn why(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!(
            "no answer within {}",
            seatrial_engine::fmt_duration(timeout)
        );
    }
    let mut why = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !why.contains(&text) {
            why = format!("{why}: {text}");
        }
        source = s.source();
    }
    why
}

/// One GET: the answer (status and up to [`MAX_BODY`] of body), or why there was none.
async fn ask(
    client: &reqwest::Client,
    url: &reqwest::Url,
    host: Option<&str>,
    timeout: Duration,
) -> Result<Answer, String> {
    let mut request = client.get(url.clone());
    if let Some(host) = host {
        request = request.header(reqwest::header::HOST, host);
    }
    let mut response = request.send().await.map_err(|e| why(&e, timeout))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while body.len() < MAX_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(MAX_BODY);
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// What was asked, for messages: `http://x/ (Host: d)`.
fn asked(url: &reqwest::Url, host: Option<&str>) -> String {
    match host {
        Some(h) => format!("{url} (Host: {h})"),
        None => url.to_string(),
    }
}

pub async fn run(args: &ProbeArgs) -> Result<(), Failure> {
    let url = reqwest::Url::parse(&args.url).map_err(|e| {
        Failure::new(
            BAD_INPUT,
            format!(
                "{:?} is not a URL ({e}); give one like http://127.0.0.1:8086/healthz",
                args.url
            ),
        )
    })?;
    let spec = ProbeSpec {
        status: args.accept.unwrap_or((args.status, args.status)),
        body_contains: args.body.clone(),
        ..ProbeSpec::default()
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(args.timeout)
        .user_agent("seatrial-probe")
        .build()
        .map_err(|e| Failure::new(APP_FAILED, format!("cannot build an HTTP client: {e}")))?;
    let host = args.host.as_deref();
    let what = asked(&url, host);
    let started = Instant::now();
    let deadline = started + args.retry_for.unwrap_or_default();
    let mut wait = Duration::from_millis(100);
    let mut tries = 0u32;
    loop {
        tries += 1;
        let reason = match ask(&client, &url, host, args.timeout).await {
            Ok(answer) => match judge(&spec, &answer) {
                Ok(()) => {
                    let after = if tries > 1 {
                        format!(
                            " (try {tries}, after {})",
                            seatrial_engine::fmt_duration(started.elapsed())
                        )
                    } else {
                        String::new()
                    };
                    println!("{what}: {}{after}", answer.status);
                    return Ok(());
                }
                Err(why) => why,
            },
            Err(why) => why,
        };
        if args.retry_for.is_none() {
            return Err(Failure::new(APP_FAILED, format!("{what}: {reason}")));
        }
        if Instant::now() + wait > deadline {
            return Err(Failure::new(
                APP_FAILED,
                format!(
                    "{what}: no healthy answer within {} ({tries} tries); last: {reason}",
                    seatrial_engine::fmt_duration(args.retry_for.unwrap_or_default())
                ),
            ));
        }
        eprintln!("{what}: try {tries}: {reason}");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn args(line: &[&str]) -> ProbeArgs {
        let cli =
            crate::cli::Cli::try_parse_from(["seatrial", "probe"].iter().chain(line).copied())
                .expect("parses");
        match cli.command {
            crate::cli::Command::Probe(a) => a,
            _ => unreachable!("a probe command"),
        }
    }

    /// A server answering each connection with the next of `answers` (status, body), the last
    /// one for ever after; the request heads it got go to the returned receiver.
    async fn server(
        answers: Vec<(u16, &'static str)>,
    ) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut s, _)) = listener.accept().await {
                let (status, body) = answers[n.min(answers.len() - 1)];
                n += 1;
                let mut buf = vec![0u8; 4096];
                let read = s.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..read]).into_owned());
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        (port, rx)
    }

    #[test]
    fn the_old_flags_stay_and_new_ones_parse() {
        let a = args(&["http://x/", "--status", "204", "--timeout", "2s"]);
        assert_eq!((a.status, a.timeout), (204, Duration::from_secs(2)));
        assert_eq!(
            (a.accept, a.host, a.body, a.retry_for),
            (None, None, None, None)
        );
        let a = args(&[
            "http://x/",
            "--host",
            "app.example.org",
            "--accept",
            "200-399",
            "--body",
            "Welcome",
            "--retry-for",
            "1m",
        ]);
        assert_eq!(a.host.as_deref(), Some("app.example.org"));
        assert_eq!(a.accept, Some((200, 399)));
        assert_eq!(a.body.as_deref(), Some("Welcome"));
        assert_eq!(a.retry_for, Some(Duration::from_secs(60)));
        let both = crate::cli::Cli::try_parse_from([
            "seatrial",
            "probe",
            "http://x/",
            "--status",
            "200",
            "--accept",
            "200-299",
        ]);
        assert!(both.is_err(), "--status and --accept exclude each other");
        let bad =
            crate::cli::Cli::try_parse_from(["seatrial", "probe", "http://x/", "--accept", "2xx"]);
        assert!(
            bad.expect_err("not a range").to_string().contains("2xx"),
            "the error names the bad value"
        );
    }

    #[tokio::test]
    async fn host_accept_and_body_decide() {
        let (port, mut heads) = server(vec![(302, "moved, Welcome")]).await;
        let url = format!("http://127.0.0.1:{port}/health");
        let ok = args(&[
            &url,
            "--host",
            "app.example.org",
            "--accept",
            "200-399",
            "--body",
            "Welcome",
        ]);
        run(&ok)
            .await
            .expect("a 302 with the text is healthy in 200-399");
        let head = heads.recv().await.expect("a request");
        assert!(head.starts_with("GET /health HTTP/1.1"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("host: app.example.org\r\n"),
            "the Host header is the one asked for: {head}"
        );
        let exact = args(&[&url]);
        let err = run(&exact).await.expect_err("302 is not 200");
        assert!(
            err.message.contains("status 302 (expected 200-200)"),
            "{}",
            err.message
        );
        let body = args(&[&url, "--accept", "300-399", "--body", "Hello"]);
        let err = run(&body).await.expect_err("the body lacks the text");
        assert!(err.message.contains("lacks \"Hello\""), "{}", err.message);
    }

    #[tokio::test]
    async fn retries_until_healthy_or_names_the_last_answer() {
        let (port, _heads) = server(vec![(503, "starting"), (503, "starting"), (200, "up")]).await;
        let url = format!("http://127.0.0.1:{port}/");
        run(&args(&[&url, "--retry-for", "10s"]))
            .await
            .expect("the third try is healthy");

        let (port, _heads) = server(vec![(404, "default backend")]).await;
        let url = format!("http://127.0.0.1:{port}/");
        let started = std::time::Instant::now();
        let err = run(&args(&[
            &url,
            "--host",
            "d.example",
            "--retry-for",
            "700ms",
        ]))
        .await
        .expect_err("never healthy");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "it retried"
        );
        assert!(
            err.message.contains("no healthy answer within 700ms")
                && err.message.contains("last: status 404 (expected 200-200)")
                && err.message.contains("(Host: d.example)"),
            "{}",
            err.message
        );

        // Nothing listens: the reason is the connection's.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let err = run(&args(&[&format!("http://127.0.0.1:{port}/")]))
            .await
            .expect_err("refused");
        assert!(
            err.message.to_lowercase().contains("connect"),
            "{}",
            err.message
        );
    }
}
