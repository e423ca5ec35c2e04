//! Env files (`.env.sample`, `.env`) as recipe maintainers write them: comments, blank lines,
//! `export`, single/double quotes, inline comments (which carry hints like `# length=64`), no
//! trailing newline. Values may use `${VAR}` of lines above them (single-quoted values may not).

use indexmap::IndexMap;

use crate::interpolate::{self, InterpolationError};

/// One `KEY=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvEntry {
    pub value: String,
    /// The inline comment after an unquoted or quoted value, without `#`, trimmed.
    pub comment: Option<String>,
    /// 1-based line number.
    pub line: usize,
}

impl EnvEntry {
    /// A `key=N` hint from the inline comment, e.g. `length` in `# length=128`.
    pub fn hint(&self, key: &str) -> Option<&str> {
        self.comment
            .as_deref()?
            .split_whitespace()
            .find_map(|part| {
                let (k, v) = part.split_once('=')?;
                (k == key).then_some(v)
            })
    }
}

/// A parsed env file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvFile {
    pub entries: IndexMap<String, EnvEntry>,
    /// Lines that could not be read, as `(line, problem)`; they are skipped.
    pub problems: Vec<(usize, String)>,
    /// Lines that make the file unusable, as `(line, problem)`: a quote that is never closed
    /// would otherwise swallow every following line (secrets' versions included).
    pub errors: Vec<(usize, String)>,
}

impl EnvFile {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|e| e.value.as_str())
    }

    /// The values alone.
    pub fn values(&self) -> IndexMap<String, String> {
        self.entries
            .iter()
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect()
    }
}

fn valid_key(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c == '.' || c.is_ascii_alphanumeric())
}

/// Parses env-file text. Never fails: unreadable lines are reported in `problems`.
pub fn parse(text: &str) -> EnvFile {
    let mut file = EnvFile::default();
    let all: Vec<&str> = text.lines().collect();
    let mut next = 0;
    while next < all.len() {
        let (idx, raw) = (next, all[next]);
        next += 1;
        let line_no = idx + 1;
        let line = raw.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, rest)) = line.split_once('=') else {
            file.problems
                .push((line_no, format!("`{line}` is not KEY=value; ignored")));
            continue;
        };
        let key = key.trim();
        if !valid_key(key) {
            file.problems.push((
                line_no,
                format!("`{key}` is not a valid variable name; line ignored"),
            ));
            continue;
        }
        let rest = rest.trim_start();
        let (value, comment, interpolate_value) = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => {
                // A quoted value may span lines.
                let mut body = rest[1..].to_owned();
                let mut end = find_closing(&body, q);
                let mut after_value = next;
                while end.is_none() && after_value < all.len() {
                    // A continuation line that reads as an assignment means the quote was left
                    // open by mistake: a value does not swallow the variables after it.
                    if looks_like_assignment(all[after_value]) {
                        break;
                    }
                    body.push('\n');
                    body.push_str(all[after_value]);
                    after_value += 1;
                    end = find_closing(&body, q);
                }
                let Some(end) = end else {
                    // Read on after this line: the rest of the file is not part of the value.
                    file.errors.push((
                        line_no,
                        format!(
                            "the {q} quote opening the value of `{key}` is never closed; close it on this line (or escape it)"
                        ),
                    ));
                    continue;
                };
                next = after_value;
                let inner = &body[..end];
                let after = body[end + 1..].trim();
                let comment = after.strip_prefix('#').map(|c| c.trim().to_owned());
                if q == '"' {
                    (unescape_double(inner), comment, true)
                } else {
                    (inner.to_owned(), comment, false)
                }
            }
            _ => {
                // Unquoted: an inline comment starts at ` #`.
                let (value, comment) = match rest.find(" #").or_else(|| rest.find("\t#")) {
                    Some(i) => (&rest[..i], Some(rest[i + 2..].trim().to_owned())),
                    None => (rest, None),
                };
                (value.trim().to_owned(), comment, true)
            }
        };
        let value = if interpolate_value && value.contains('$') {
            let known = file.values();
            match interpolate::interpolate(&value, &|k| known.get(k).cloned()) {
                Ok(out) => out.value,
                Err(InterpolationError::Syntax { .. }) => value, // a literal `$` in a value
                Err(e) => {
                    file.problems.push((line_no, format!("`{key}`: {e}")));
                    value
                }
            }
        } else {
            value
        };
        file.entries.insert(
            key.to_owned(),
            EnvEntry {
                value,
                comment,
                line: line_no,
            },
        );
    }
    file
}

/// `KEY=…` or `export KEY=…` at the start of a line.
fn looks_like_assignment(line: &str) -> bool {
    let t = line.trim_start();
    let t = t.strip_prefix("export ").map_or(t, str::trim_start);
    t.split_once('=')
        .is_some_and(|(k, _)| !k.is_empty() && valid_key(k) && !k.contains('.'))
}

fn find_closing(body: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if quote == '"' && c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        if c == quote && !escaped {
            return Some(i);
        }
        escaped = false;
    }
    None
}

fn unescape_double(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `export NAME=VALUE` lines of a Co-op Cloud `abra.sh`, read as text — never executed.
/// Other lines (functions, commands) are ignored.
pub fn abra_exports(text: &str) -> IndexMap<String, String> {
    let mut out = IndexMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("export ") else {
            continue;
        };
        let parsed = parse(rest);
        for (k, e) in parsed.entries {
            // A value computed by the shell (`$(…)`, backticks) cannot be known without running it.
            if !e.value.contains("$(") && !e.value.contains('`') {
                out.insert(k, e.value);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_maintainers_write() {
        let f = parse(
            "\u{feff}# a comment\nTYPE=myrecipe\n\nDOMAIN=myrecipe.example.com\nexport LETS_ENCRYPT_ENV=production\n\
             SECRET_DB_PASSWORD_VERSION=v1 # length=64\nQUOTED=\"a # not a comment\" # real comment\n\
             SINGLE='${NOT} expanded'\nDOUBLE=\"tab\\tand \\\"quote\\\"\"\nEMPTY=\nSPACED = padded  \n\
             COMPOSE_FILE=\"compose.yml\"\nCOMPOSE_FILE=\"$COMPOSE_FILE:compose.smtp.yml\"\n\
             URL=https://$DOMAIN/path\nMULTI=\"line1\nline2\"\nLAST=no-newline",
        );
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert_eq!(f.get("TYPE"), Some("myrecipe"));
        assert_eq!(f.get("LETS_ENCRYPT_ENV"), Some("production"));
        assert_eq!(f.get("SECRET_DB_PASSWORD_VERSION"), Some("v1"));
        assert_eq!(
            f.entries["SECRET_DB_PASSWORD_VERSION"].hint("length"),
            Some("64")
        );
        assert_eq!(f.get("QUOTED"), Some("a # not a comment"));
        assert_eq!(f.entries["QUOTED"].comment.as_deref(), Some("real comment"));
        assert_eq!(f.get("SINGLE"), Some("${NOT} expanded"));
        assert_eq!(f.get("DOUBLE"), Some("tab\tand \"quote\""));
        assert_eq!(f.get("EMPTY"), Some(""));
        assert_eq!(f.get("SPACED"), Some("padded"));
        assert_eq!(f.get("COMPOSE_FILE"), Some("compose.yml:compose.smtp.yml"));
        assert_eq!(f.get("URL"), Some("https://myrecipe.example.com/path"));
        assert_eq!(f.get("MULTI"), Some("line1\nline2"));
        assert_eq!(f.get("LAST"), Some("no-newline"));
        assert_eq!(f.entries["LAST"].line, 17);
    }

    #[test]
    fn bad_lines_are_reported_not_fatal() {
        let f = parse("GOOD=1\njust words\n1BAD=x\nOPEN=\"never closed\nAFTER=2");
        assert_eq!(f.get("GOOD"), Some("1"));
        assert_eq!(f.problems.len(), 2, "{:?}", f.problems);
        assert!(f.problems[0].1.contains("not KEY=value"));
        assert!(f.problems[1].1.contains("not a valid variable name"));
        assert_eq!(f.errors.len(), 1, "{:?}", f.errors);
        assert_eq!(f.errors[0].0, 4);
        assert!(f.errors[0].1.contains("never closed"), "{:?}", f.errors);
    }

    #[test]
    fn an_unclosed_quote_does_not_swallow_the_lines_after_it() {
        let f = parse("A='open\nSECRET_DB_VERSION=v1 # length=40\nB=2\nC='closed'\n");
        assert_eq!(f.errors.len(), 1);
        assert_eq!(f.get("SECRET_DB_VERSION"), Some("v1"));
        assert_eq!(f.get("B"), Some("2"));
        assert_eq!(f.get("A"), None);
        assert_eq!(f.get("C"), Some("closed"));
    }

    #[test]
    fn self_reference_cannot_loop() {
        // Values only see lines above them, so A=${B}, B=${A} terminates.
        let f = parse("A=${B}\nB=${A}x\nC=$C");
        assert_eq!(f.get("A"), Some(""));
        assert_eq!(f.get("B"), Some("x"));
        assert_eq!(f.get("C"), Some(""));
    }

    #[test]
    fn abra_sh_exports_are_read_never_run() {
        let e = abra_exports(
            "export APP_CONF_VERSION=v3\nexport ENTRYPOINT_VERSION=\"v2\"\nexport NOW=$(date)\n\
             rm -rf / # never executed\nfunction x() {\n  export INNER=v1\n}\n",
        );
        assert_eq!(e.get("APP_CONF_VERSION").map(String::as_str), Some("v3"));
        assert_eq!(e.get("ENTRYPOINT_VERSION").map(String::as_str), Some("v2"));
        assert!(!e.contains_key("NOW"));
        assert_eq!(e.get("INNER").map(String::as_str), Some("v1"));
    }
}
