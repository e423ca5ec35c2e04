//! Webhook deliveries are trusted only when their HMAC-SHA256 signature over the raw body, with
//! the server's secret, matches — compared in constant time. Gitea sends `X-Gitea-Signature`,
//! Forgejo `X-Forgejo-Signature` (both hex), older ones `X-Gogs-Signature`, and all of them
//! also `X-Hub-Signature-256` (`sha256=<hex>`). A verified `issue_comment` delivery is read into
//! the same [`Comment`] that polling yields; a verified `push` delivery into a [`PushEvent`].

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::{Comment, RepoName};

/// Why a delivery was refused (answered 401; nothing is queued).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "no signature header (X-Gitea-Signature, X-Forgejo-Signature or X-Hub-Signature-256); set the webhook's secret on the forge"
    )]
    Missing,
    #[error("the {header} header is not a hex HMAC-SHA256")]
    Malformed { header: &'static str },
    #[error("the signature does not match: the webhook's secret differs from seatrial's")]
    Mismatch,
}

/// The signature headers seatrial reads, in the order it prefers them.
pub const HEADERS: [&str; 4] = [
    "x-gitea-signature",
    "x-forgejo-signature",
    "x-gogs-signature",
    "x-hub-signature-256",
];

/// Checks `body` against the first signature header present. `header` looks a header up by
/// its lower-case name.
pub fn verify_signature<'h>(
    secret: &[u8],
    body: &[u8],
    header: impl Fn(&str) -> Option<&'h str>,
) -> Result<(), SignatureError> {
    let (name, value) = HEADERS
        .iter()
        .find_map(|h| header(h).map(|v| (*h, v.trim())))
        .ok_or(SignatureError::Missing)?;
    let hex_digest = if name == "x-hub-signature-256" {
        value
            .strip_prefix("sha256=")
            .ok_or(SignatureError::Malformed { header: name })?
    } else {
        value
    };
    let given = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed { header: name })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// The event header names (Gitea, Forgejo, Gogs), in the order seatrial reads them.
pub const EVENT_HEADERS: [&str; 3] = ["x-gitea-event", "x-forgejo-event", "x-gogs-event"];

/// The delivery's body is not JSON (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the payload is not JSON: {0}")]
pub struct PayloadError(String);

/// The comment an `issue_comment` delivery carries, when it was created or edited; `Ok(None)`
/// for other actions and for payloads without a repository or comment id (nothing to act on).
pub fn comment_event(body: &[u8]) -> Result<Option<(RepoName, Comment)>, PayloadError> {
    let payload: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| PayloadError(e.to_string()))?;
    Ok(comment_of(&payload))
}

fn comment_of(payload: &serde_json::Value) -> Option<(RepoName, Comment)> {
    if !matches!(payload["action"].as_str(), Some("created" | "edited")) {
        return None;
    }
    let repo = payload["repository"]["full_name"].as_str()?.parse().ok()?;
    let c = &payload["comment"];
    let comment = Comment {
        id: c["id"].as_i64()?,
        body: c["body"].as_str().unwrap_or_default().to_owned(),
        user: c["user"]["login"].as_str().unwrap_or_default().to_owned(),
        number: payload["issue"]["number"].as_i64(),
        on_pull: payload["is_pull"].as_bool().unwrap_or(false)
            || !payload["issue"]["pull_request"].is_null(),
        updated_at: c["updated_at"]
            .as_str()
            .filter(|t| !t.is_empty())
            .or_else(|| c["created_at"].as_str())
            .unwrap_or_default()
            .to_owned(),
    };
    Some((repo, comment))
}

/// A `push` delivery: a ref of `repo` moved from `before` to `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    pub repo: RepoName,
    /// The full ref, `refs/heads/<branch>` or `refs/tags/<tag>`.
    pub git_ref: String,
    pub before: String,
    /// The commit the ref points at now (all zeros: the ref was deleted).
    pub after: String,
    /// The pusher's login (empty when the payload has none).
    pub pusher: String,
    /// Where the repository is cloned from (`repository.clone_url`), when the payload says.
    pub clone_url: Option<String>,
}

impl PushEvent {
    /// The branch pushed to; `None` for tags and other refs.
    pub fn branch(&self) -> Option<&str> {
        self.git_ref
            .strip_prefix("refs/heads/")
            .filter(|b| !b.is_empty())
    }

    /// Whether the push deleted the ref (`after` is all zeros).
    pub fn deleted(&self) -> bool {
        self.after.is_empty() || self.after.bytes().all(|b| b == b'0')
    }
}

/// The push a `push` delivery carries; `Ok(None)` for payloads without a repository or ref
/// (nothing to act on).
pub fn push_event(body: &[u8]) -> Result<Option<PushEvent>, PayloadError> {
    let payload: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| PayloadError(e.to_string()))?;
    let Some(repo) = payload["repository"]["full_name"]
        .as_str()
        .and_then(|n| n.parse().ok())
    else {
        return Ok(None);
    };
    let Some(git_ref) = payload["ref"].as_str().filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    Ok(Some(PushEvent {
        repo,
        git_ref: git_ref.to_owned(),
        before: text(&payload["before"]),
        after: text(&payload["after"]),
        pusher: payload["pusher"]["login"]
            .as_str()
            .or_else(|| payload["pusher"]["username"].as_str())
            .unwrap_or_default()
            .to_owned(),
        clone_url: payload["repository"]["clone_url"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(str::to_owned),
    }))
}

/// The hex HMAC-SHA256 of `body` (what a forge sends; used by the fake forge in tests).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"webhook-secret";
    const BODY: &[u8] = br#"{"action":"created","comment":{"id":1,"body":"!testme"}}"#;

    fn headers<'a>(pairs: &'a [(&'a str, String)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    #[test]
    fn a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn each_forge_header_is_accepted_when_it_matches() {
        let good = sign(SECRET, BODY);
        for (name, value) in [
            ("X-Gitea-Signature", good.clone()),
            ("X-Forgejo-Signature", good.clone()),
            ("X-Gogs-Signature", good.clone()),
            ("X-Hub-Signature-256", format!("sha256={good}")),
        ] {
            let pairs = [(name, value)];
            assert_eq!(
                verify_signature(SECRET, BODY, headers(&pairs)),
                Ok(()),
                "{name}"
            );
        }
    }

    #[test]
    fn wrong_missing_or_malformed_signatures_are_refused() {
        let good = sign(SECRET, BODY);
        let other = [("X-Gitea-Signature", sign(b"another secret", BODY))];
        assert_eq!(
            verify_signature(SECRET, BODY, headers(&other)),
            Err(SignatureError::Mismatch)
        );
        let tampered = [("X-Gitea-Signature", good.clone())];
        assert_eq!(
            verify_signature(
                SECRET,
                b"{\"comment\":{\"body\":\"!testme --quick\"}}",
                headers(&tampered)
            ),
            Err(SignatureError::Mismatch),
            "a changed body fails"
        );
        assert_eq!(
            verify_signature(SECRET, BODY, headers(&[])),
            Err(SignatureError::Missing)
        );
        let no_prefix = [("X-Hub-Signature-256", good.clone())];
        assert!(matches!(
            verify_signature(SECRET, BODY, headers(&no_prefix)),
            Err(SignatureError::Malformed { .. })
        ));
        let not_hex = [("X-Gitea-Signature", "zz".to_owned())];
        assert!(matches!(
            verify_signature(SECRET, BODY, headers(&not_hex)),
            Err(SignatureError::Malformed { .. })
        ));
        let short = [("X-Gitea-Signature", good[..10].to_owned())];
        assert_eq!(
            verify_signature(SECRET, BODY, headers(&short)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn comment_events_are_read_and_other_actions_ignored() {
        let created = br#"{"action":"created","repository":{"full_name":"coop/hello"},
            "issue":{"number":4,"pull_request":{"merged":false}},
            "comment":{"id":9,"body":"!testme","user":{"login":"alice"},
                       "created_at":"2026-11-24T10:00:00Z","updated_at":""}}"#;
        let (repo, c) = comment_event(created).expect("JSON").expect("a comment");
        assert_eq!(repo.to_string(), "coop/hello");
        assert_eq!(
            (c.id, c.body.as_str(), c.user.as_str(), c.number, c.on_pull),
            (9, "!testme", "alice", Some(4), true)
        );
        assert_eq!(
            c.updated_at, "2026-11-24T10:00:00Z",
            "created_at when never edited"
        );
        let deleted =
            br#"{"action":"deleted","repository":{"full_name":"coop/hello"},"comment":{"id":9}}"#;
        assert_eq!(comment_event(deleted), Ok(None));
        assert!(comment_event(b"not json").is_err());
    }

    #[test]
    fn push_events_name_the_branch_and_deletions() {
        let push = br#"{"ref":"refs/heads/main","before":"1111111111111111111111111111111111111111",
            "after":"2222222222222222222222222222222222222222",
            "repository":{"full_name":"coop/app","clone_url":"https://git.example.org/coop/app.git"},
            "pusher":{"login":"alice"},"commits":[]}"#;
        let p = push_event(push).expect("JSON").expect("a push");
        assert_eq!(p.repo.to_string(), "coop/app");
        assert_eq!(p.branch(), Some("main"));
        assert!(!p.deleted());
        assert_eq!(p.pusher, "alice");
        assert_eq!(
            p.clone_url.as_deref(),
            Some("https://git.example.org/coop/app.git")
        );
        let tag = br#"{"ref":"refs/tags/v1","after":"22","repository":{"full_name":"coop/app"}}"#;
        assert_eq!(
            push_event(tag).expect("JSON").expect("a push").branch(),
            None
        );
        let gone = br#"{"ref":"refs/heads/old","after":"0000000000000000000000000000000000000000","repository":{"full_name":"coop/app"}}"#;
        assert!(push_event(gone).expect("JSON").expect("a push").deleted());
        assert_eq!(push_event(br#"{"ref":"refs/heads/main"}"#), Ok(None));
        assert!(push_event(b"not json").is_err());
    }
}
