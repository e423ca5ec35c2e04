//! Webhook deliveries are trusted only when their HMAC-SHA256 signature over the raw body, with
//! the server's secret, matches — compared in constant time. Gitea sends `X-Gitea-Signature`,
//! Forgejo `X-Forgejo-Signature` (both hex), older ones `X-Gogs-Signature`, and all of them
//! also `X-Hub-Signature-256` (`sha256=<hex>`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

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
}
