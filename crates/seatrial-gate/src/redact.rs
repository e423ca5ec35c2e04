//! Secrets kept out of output: a database URL whose password is never shown, and the scrubbing
//! of a known secret (the deploy token) from text a server sent back.

use std::fmt;

/// A URL with credentials: `Display` and `Debug` show it with its password (and any `password`
/// query parameter) as `***`; only [`SecretUrl::expose`] gives the real one, to connect with.
#[derive(Clone)]
pub struct SecretUrl {
    raw: String,
    shown: String,
}

impl SecretUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let has_host = reqwest::Url::parse(raw).is_ok_and(|u| u.has_host());
        let shown = redact_url(raw).filter(|_| has_host).ok_or_else(|| {
            // Never echo the input: it may be a URL with a password that merely fails to parse.
            "not a URL (expected postgres://user:password@host:port/database)".to_owned()
        })?;
        Ok(Self {
            raw: raw.to_owned(),
            shown,
        })
    }

    /// The URL with its password, for connecting only.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// `text` (an error of a client that connected with this URL) with the URL and its
    /// password, as written or percent-decoded, replaced.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.raw, &self.shown);
        if let Some(password) = reqwest::Url::parse(&self.raw)
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
        {
            let decoded = percent_decode(&password);
            for p in [password, decoded] {
                out = scrub(&out, &p);
            }
        }
        out
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.shown)
    }
}

/// The URL with its password and `password=` query parameters replaced by `***`; `None` when
/// it is not a URL.
pub fn redact_url(raw: &str) -> Option<String> {
    let mut url = reqwest::Url::parse(raw).ok()?;
    if url.password().is_some() {
        url.set_password(Some("***")).ok()?;
    }
    if url.query_pairs().any(|(k, _)| is_secret_param(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Some(url.to_string())
}

fn is_secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("token") || key.contains("secret")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` with every occurrence of `secret` replaced by `***` (a server echoing the
/// `Authorization` header must not put the token in a report).
pub fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret, "***")
}

/// The first `max` bytes of `text` (on a character boundary), saying how much was cut.
pub fn excerpt(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} more bytes]", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let u = SecretUrl::parse("postgres://ci:hunter2@db.example:5432/postgres?sslmode=require")
            .expect("url");
        assert_eq!(
            u.to_string(),
            "postgres://ci:***@db.example:5432/postgres?sslmode=require"
        );
        assert!(!format!("{u:?}").contains("hunter2"));
        assert!(u.expose().contains("hunter2"));
        let odd = SecretUrl::parse("postgres://ci:p%40ss@db/x").expect("url");
        assert_eq!(
            odd.scrub("auth failed for p@ss and p%40ss"),
            "auth failed for *** and ***"
        );
        let q = redact_url("postgres://db/x?user=ci&password=hunter2").expect("url");
        assert!(!q.contains("hunter2") && q.contains("user=ci"), "{q}");
        let e = SecretUrl::parse("ci:hunter2 at db").expect_err("not a URL");
        assert!(!e.contains("hunter2"));
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt("short", 10), "short");
        let long = "é".repeat(100);
        let e = excerpt(&long, 11);
        assert!(e.starts_with("ééééé…"), "{e}");
        assert!(e.ends_with("[190 more bytes]"), "{e}");
        assert_eq!(scrub("Bearer abc123 echoed", "abc123"), "Bearer *** echoed");
    }
}
