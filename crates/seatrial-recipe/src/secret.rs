//! Secret values: generated from the OS CSPRNG, never shown by `Debug` or `Display`.

use std::fmt;

/// A secret value. Its text is reachable only through [`SecretValue::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Generates `length` characters from `[A-Za-z0-9]` with the OS CSPRNG (no modulo bias).
    pub fn generate(length: usize) -> Result<Self, getrandom::Error> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut out = String::with_capacity(length);
        let mut buf = [0u8; 64];
        while out.len() < length {
            getrandom::fill(&mut buf)?;
            // 248 = 4 * 62: bytes at or above it would bias the first characters.
            for b in buf.iter().copied().filter(|b| *b < 248) {
                if out.len() == length {
                    break;
                }
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
        Ok(Self(out))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::SecretValue;

    #[test]
    fn generated_values_have_the_length_and_alphabet_and_differ() {
        let a = SecretValue::generate(48).expect("rng");
        let b = SecretValue::generate(48).expect("rng");
        assert_eq!(a.expose().len(), 48);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_eq!(format!("{a:?} {a}"), "SecretValue(<redacted>) <redacted>");
    }
}
