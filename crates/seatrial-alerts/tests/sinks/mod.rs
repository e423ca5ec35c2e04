//! Real network sinks on 127.0.0.1 for the delivery tests: an HTTP server that records what it
//! is sent, one that accepts connections and never answers, and a small SMTP server.

use std::sync::{Arc, Mutex};

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;

async fn listen() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    (listener, port)
}

/// One request as the HTTP sink saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }
}

/// An HTTP server answering every request with one status and body, and recording the requests.
pub struct HttpSink {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl HttpSink {
    pub async fn answering(status: u16, answer: &'static str) -> Self {
        let (listener, port) = listen().await;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorder = Arc::clone(&requests);
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let recorder = Arc::clone(&recorder);
            async move {
                let (parts, body) = request.into_parts();
                let body = to_bytes(body, 1 << 20).await.expect("body");
                recorder.lock().expect("lock").push(Recorded {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    headers: parts.headers,
                    body: body.to_vec(),
                });
                let status = StatusCode::from_u16(status).expect("status");
                let mut response = (status, answer).into_response();
                if status.is_redirection() {
                    response.headers_mut().insert(
                        "location",
                        "https://elsewhere.example.org/hook"
                            .parse()
                            .expect("header"),
                    );
                }
                response
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            requests,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections and never says a word.
pub struct SilentSink {
    pub port: u16,
    task: JoinHandle<()>,
}

impl SilentSink {
    pub async fn start() -> Self {
        let (listener, port) = listen().await;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Self { port, task }
    }
}

impl Drop for SilentSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the SMTP sink was told.
#[derive(Debug, Clone, Default)]
pub struct SmtpLog {
    /// Every command line, AUTH continuation lines excepted.
    pub commands: Vec<String>,
    /// `(user, password)` of each AUTH.
    pub logins: Vec<(String, String)>,
    pub mail_from: Vec<String>,
    pub rcpt_to: Vec<String>,
    /// Each message's DATA, dot-unstuffed, lines joined with `\n`.
    pub messages: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub enum Auth {
    /// AUTH is not offered.
    Off,
    /// AUTH PLAIN and LOGIN are offered and any login is accepted.
    Accept,
    /// Offered, and every login refused with a 535 that (badly) echoes the credentials.
    RefuseEchoing,
}

/// A plain SMTP server (EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT), no TLS.
pub struct SmtpSink {
    pub port: u16,
    log: Arc<Mutex<SmtpLog>>,
    task: JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start(auth: Auth) -> Self {
        let (listener, port) = listen().await;
        let log = Arc::new(Mutex::new(SmtpLog::default()));
        let shared = Arc::clone(&log);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let log = Arc::clone(&shared);
                tokio::spawn(async move {
                    // A client that hangs up mid-conversation ends it; nothing to report.
                    let _ = converse(socket, auth, log).await;
                });
            }
        });
        Self { port, log, task }
    }

    pub fn log(&self) -> SmtpLog {
        self.log.lock().expect("lock").clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn reply(writer: &mut OwnedWriteHalf, text: &str) -> std::io::Result<()> {
    writer.write_all(text.as_bytes()).await?;
    writer.flush().await
}

fn decode(b64: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn converse(
    socket: tokio::net::TcpStream,
    auth: Auth,
    log: Arc<Mutex<SmtpLog>>,
) -> std::io::Result<()> {
    let (reader, mut writer) = socket.into_split();
    let mut lines = BufReader::new(reader).lines();
    reply(&mut writer, "220 sink.test ESMTP\r\n").await?;
    while let Some(line) = lines.next_line().await? {
        let line = line.trim_end_matches('\r').to_string();
        log.lock().expect("lock").commands.push(line.clone());
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            let offer = match auth {
                Auth::Off => "",
                Auth::Accept | Auth::RefuseEchoing => "250-AUTH PLAIN LOGIN\r\n",
            };
            reply(
                &mut writer,
                &format!("250-sink.test\r\n{offer}250 8BITMIME\r\n"),
            )
            .await?;
        } else if upper.starts_with("AUTH PLAIN") || upper.starts_with("AUTH LOGIN") {
            let (user, password) = if upper.starts_with("AUTH PLAIN") {
                let initial = line
                    .get("AUTH PLAIN".len()..)
                    .unwrap_or("")
                    .trim()
                    .to_string();
                let response = if initial.is_empty() {
                    reply(&mut writer, "334 \r\n").await?;
                    lines.next_line().await?.unwrap_or_default()
                } else {
                    initial
                };
                let decoded = decode(&response);
                let mut parts = decoded.split('\0').skip(1);
                (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                )
            } else {
                reply(&mut writer, "334 VXNlcm5hbWU6\r\n").await?;
                let user = decode(&lines.next_line().await?.unwrap_or_default());
                reply(&mut writer, "334 UGFzc3dvcmQ6\r\n").await?;
                let password = decode(&lines.next_line().await?.unwrap_or_default());
                (user, password)
            };
            log.lock()
                .expect("lock")
                .logins
                .push((user.clone(), password.clone()));
            match auth {
                Auth::RefuseEchoing => {
                    let refusal = format!("535 5.7.8 credentials {user}/{password} rejected\r\n");
                    reply(&mut writer, &refusal).await?;
                }
                _ => reply(&mut writer, "235 2.7.0 accepted\r\n").await?,
            }
        } else if upper.starts_with("MAIL FROM:") {
            log.lock()
                .expect("lock")
                .mail_from
                .push(line["MAIL FROM:".len()..].to_string());
            reply(&mut writer, "250 2.1.0 ok\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            log.lock()
                .expect("lock")
                .rcpt_to
                .push(line["RCPT TO:".len()..].to_string());
            reply(&mut writer, "250 2.1.5 ok\r\n").await?;
        } else if upper == "DATA" {
            reply(&mut writer, "354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut message = Vec::new();
            while let Some(data) = lines.next_line().await? {
                let data = data.trim_end_matches('\r');
                if data == "." {
                    break;
                }
                message.push(data.strip_prefix('.').unwrap_or(data).to_string());
            }
            log.lock().expect("lock").messages.push(message.join("\n"));
            reply(&mut writer, "250 2.0.0 queued\r\n").await?;
        } else if upper == "QUIT" {
            reply(&mut writer, "221 2.0.0 bye\r\n").await?;
            break;
        } else if upper == "RSET" || upper == "NOOP" {
            reply(&mut writer, "250 2.0.0 ok\r\n").await?;
        } else {
            reply(&mut writer, "502 5.5.2 not implemented\r\n").await?;
        }
    }
    Ok(())
}
