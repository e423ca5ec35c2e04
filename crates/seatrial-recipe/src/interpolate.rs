//! Compose-spec variable interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`,
//! `${VAR:?msg}`, `${VAR?msg}`, `${VAR:+v}`, `${VAR+v}`, with nested expressions inside the
//! default/replacement/message parts.
//!
//! Variable values are never re-interpolated, so expansion always terminates; nesting depth is
//! bounded so adversarial input cannot exhaust the stack.

use std::fmt;

/// Deepest `${...}` nesting accepted.
pub const MAX_NESTING: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpolationError {
    /// `${VAR:?msg}` / `${VAR?msg}` with the variable unset (or empty, for `:?`).
    Required { var: String, message: String },
    /// The template is malformed.
    Syntax { message: String, at: usize },
}

impl fmt::Display for InterpolationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Required { var, message } if message.is_empty() => {
                write!(f, "required variable `{var}` is not set")
            }
            Self::Required { var, message } => {
                write!(f, "required variable `{var}` is not set: {message}")
            }
            Self::Syntax { message, at } => write!(f, "{message} (at character {at})"),
        }
    }
}

/// What happened while interpolating one string.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub value: String,
    /// Variables used without a value and without a default (they became empty strings).
    pub unset: Vec<String>,
}

/// Interpolates `template`, looking variables up with `lookup`.
pub fn interpolate(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Outcome, InterpolationError> {
    let mut parser = Parser {
        chars: template.char_indices().collect(),
        pos: 0,
        lookup,
        unset: Vec::new(),
    };
    let value = parser.sequence(0, false)?;
    Ok(Outcome {
        value,
        unset: parser.unset,
    })
}

/// Interpolates `template` exactly as Docker's stack loader (docker/cli `compose/template`)
/// does, quirks included, because `docker stack deploy` and abra read recipes that way:
///
/// - `$$` is a literal `$`; `$NAME` and `${NAME}` substitute (names are `[_A-Za-z][_A-Za-z0-9]*`);
/// - an operator part `:-d`, `-d`, `:?msg`, `?msg` runs up to the first `}` (or, unbraced, to the
///   end of the text), and its text is taken literally: `${A:-${B}}` is `${B` then `}`, never
///   the value of B (nested expressions do not nest);
/// - the part is split at the first `:-`, else the first `-`, else `:?`, else `?`, in that order;
/// - `${X:+v}`, `${X+v}`, `${}`, `$1`, a lone `$` and an unclosed `${` are refused.
///
/// An unset variable without a default becomes the empty string and is reported in `unset`.
pub fn interpolate_docker(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Outcome, InterpolationError> {
    let bytes = template.as_bytes();
    let mut out = String::with_capacity(template.len());
    let mut unset: Vec<String> = Vec::new();
    let mut i = 0;
    let mut literal_start = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        out.push_str(&template[literal_start..i]);
        let invalid = || InterpolationError::Syntax {
            message: "invalid interpolation format; you may need to escape any $ with another $"
                .into(),
            at: i,
        };
        let (substitution, end) = match bytes.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
                literal_start = i;
                continue;
            }
            Some(c) if is_name_start(char::from(*c)) => {
                let (sub, end) = docker_substitution(template, i + 1);
                (sub, end)
            }
            Some(b'{') => {
                let (sub, end) = docker_substitution(template, i + 2);
                if sub.is_empty() || bytes.get(end) != Some(&b'}') {
                    return Err(invalid());
                }
                (sub, end + 1)
            }
            _ => return Err(invalid()),
        };
        out.push_str(&docker_substitute(substitution, lookup, &mut unset)?);
        i = end;
        literal_start = i;
    }
    out.push_str(&template[literal_start..]);
    Ok(Outcome { value: out, unset })
}

/// The `NAME[op text]` starting at `start` (the byte after `$` or `${`) and where it ends.
/// Empty when no name starts there.
fn docker_substitution(template: &str, start: usize) -> (&str, usize) {
    let bytes = template.as_bytes();
    if !bytes
        .get(start)
        .is_some_and(|c| is_name_start(char::from(*c)))
    {
        return ("", start);
    }
    let mut end = start + 1;
    while bytes.get(end).is_some_and(|c| is_name_char(char::from(*c))) {
        end += 1;
    }
    let op_len = match (bytes.get(end), bytes.get(end + 1)) {
        (Some(b':'), Some(b'-' | b'?')) => 2,
        (Some(b'-' | b'?'), _) => 1,
        _ => 0,
    };
    if op_len > 0 {
        end += op_len;
        while bytes.get(end).is_some_and(|c| *c != b'}') {
            end += 1;
        }
    }
    (&template[start..end], end)
}

fn docker_substitute(
    substitution: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<String, InterpolationError> {
    if let Some((name, default)) = substitution.split_once(":-") {
        return Ok(lookup(name)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned()));
    }
    if let Some((name, default)) = substitution.split_once('-') {
        return Ok(lookup(name).unwrap_or_else(|| default.to_owned()));
    }
    for (sep, non_empty) in [(":?", true), ("?", false)] {
        if let Some((name, message)) = substitution.split_once(sep) {
            return match lookup(name) {
                Some(v) if !(non_empty && v.is_empty()) => Ok(v),
                _ => Err(InterpolationError::Required {
                    var: name.to_owned(),
                    message: message.to_owned(),
                }),
            };
        }
    }
    Ok(lookup(substitution).unwrap_or_else(|| {
        if !unset.iter().any(|u| u == substitution) {
            unset.push(substitution.to_owned());
        }
        String::new()
    }))
}

/// Escapes a literal so that interpolation returns it unchanged.
pub fn escape(literal: &str) -> String {
    literal.replace('$', "$$")
}

struct Parser<'a> {
    chars: Vec<(usize, char)>,
    pos: usize,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    unset: Vec<String>,
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|(_, c)| *c)
    }

    fn offset(&self) -> usize {
        self.chars.get(self.pos).map_or_else(
            || self.chars.last().map_or(0, |(i, c)| i + c.len_utf8()),
            |(i, _)| *i,
        )
    }

    fn syntax(&self, message: impl Into<String>) -> InterpolationError {
        InterpolationError::Syntax {
            message: message.into(),
            at: self.offset(),
        }
    }

    /// Text up to the end (top level) or up to an unmatched `}` (inside a braced expression).
    fn sequence(&mut self, depth: usize, nested: bool) -> Result<String, InterpolationError> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            match c {
                '}' if nested => return Ok(out),
                '$' => {
                    self.pos += 1;
                    out.push_str(&self.dollar(depth)?);
                }
                _ => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        if nested {
            return Err(self.syntax("unclosed `${`"));
        }
        Ok(out)
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek().filter(|c| is_name_char(*c)) {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn get(&mut self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// After a `$`.
    fn dollar(&mut self, depth: usize) -> Result<String, InterpolationError> {
        match self.peek() {
            Some('$') => {
                self.pos += 1;
                Ok("$".into())
            }
            Some(c) if is_name_start(c) => {
                let name = self.name();
                Ok(self.plain(&name))
            }
            Some('{') => {
                self.pos += 1;
                self.braced(depth + 1)
            }
            _ => Err(self.syntax("a `$` must be followed by a variable name, `{` or `$` (write `$$` for a literal `$`)")),
        }
    }

    fn plain(&mut self, name: &str) -> String {
        match self.get(name) {
            Some(v) => v,
            None => {
                if !self.unset.iter().any(|u| u == name) {
                    self.unset.push(name.to_owned());
                }
                String::new()
            }
        }
    }

    /// After `${`.
    fn braced(&mut self, depth: usize) -> Result<String, InterpolationError> {
        if depth > MAX_NESTING {
            return Err(self.syntax(format!("`${{…}}` nested deeper than {MAX_NESTING} levels")));
        }
        if !self.peek().is_some_and(is_name_start) {
            return Err(self.syntax("expected a variable name after `${`"));
        }
        let name = self.name();
        let op: Option<(bool, char)> = match self.peek() {
            Some('}') => None,
            Some(':') => {
                self.pos += 1;
                match self.peek() {
                    Some(c @ ('-' | '?' | '+')) => Some((true, c)),
                    _ => {
                        return Err(
                            self.syntax(format!("expected `-`, `?` or `+` after `${{{name}:`"))
                        );
                    }
                }
            }
            Some(c @ ('-' | '?' | '+')) => Some((false, c)),
            _ => return Err(self.syntax(format!("unexpected character in `${{{name}…}}`"))),
        };
        let Some((colon, op)) = op else {
            self.pos += 1; // `}`
            return Ok(self.plain(&name));
        };
        self.pos += 1; // the operator
        // The argument is itself a template; it is evaluated only if needed, but always parsed
        // (so syntax errors surface regardless of the environment).
        let value = self.get(&name);
        let arg = self.sequence(depth, true)?;
        self.pos += 1; // `}`
        let absent = match (&value, colon) {
            (None, _) => true,
            (Some(v), true) => v.is_empty(),
            (Some(_), false) => false,
        };
        Ok(match op {
            '-' => {
                if absent {
                    arg
                } else {
                    value.unwrap_or_default()
                }
            }
            '?' => {
                if absent {
                    return Err(InterpolationError::Required {
                        var: name,
                        message: arg,
                    });
                }
                value.unwrap_or_default()
            }
            _ => {
                if absent {
                    String::new()
                } else {
                    arg
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn run(template: &str) -> Result<Outcome, InterpolationError> {
        let env: HashMap<&str, &str> =
            HashMap::from([("SET", "value"), ("EMPTY", ""), ("N", "3"), ("B", "bee")]);
        interpolate(template, &|k| env.get(k).map(|v| (*v).to_owned()))
    }

    fn ok(template: &str) -> String {
        run(template).expect("interpolates").value
    }

    fn docker(template: &str) -> Result<String, InterpolationError> {
        let env: HashMap<&str, &str> =
            HashMap::from([("SET", "value"), ("EMPTY", ""), ("B", "bee")]);
        interpolate_docker(template, &|k| env.get(k).map(|v| (*v).to_owned())).map(|o| o.value)
    }

    /// Each expectation was measured with `docker stack config` (docker CLI 28).
    #[test]
    fn docker_semantics_match_measured_results() {
        for (template, want) in [
            ("${A:-${B}}", "${B}"),
            ("${SET:-${B}}", "value}"),
            ("${A:-x}y}", "xy}"),
            ("${A-d}", "d"),
            ("${EMPTY-d}", ""),
            ("$$", "$"),
            ("a$$b", "a$b"),
            ("$$SET", "$SET"),
            ("${EMPTY?m}", ""),
            ("${SET:?a-b}", "b"),
            ("$SET-x", "value"),
            ("${SET}}", "value}"),
            ("${A:-$B}", "$B"),
            ("${A:-$$}", "$$"),
            ("x${A-${SET}}", "x${SET}"),
            ("${S}ET", "ET"),
            ("${A:-{x}", "{x"),
            ("$SET/x", "value/x"),
        ] {
            assert_eq!(docker(template).as_deref(), Ok(want), "{template}");
        }
        for bad in [
            "${SET:+alt}",
            "${SET+alt}",
            "$1",
            "a $ b",
            "${}",
            "${SET",
            "${A:x}",
            "$",
        ] {
            assert!(
                matches!(docker(bad), Err(InterpolationError::Syntax { .. })),
                "{bad} must be refused like Docker refuses it"
            );
        }
        assert_eq!(
            docker("${A:?msg}"),
            Err(InterpolationError::Required {
                var: "A".into(),
                message: "msg".into()
            })
        );
    }

    #[test]
    fn each_form() {
        assert_eq!(ok("plain"), "plain");
        assert_eq!(ok("$$"), "$");
        assert_eq!(ok("a$$b$$$SET"), "a$b$value");
        assert_eq!(ok("$SET/x"), "value/x");
        assert_eq!(ok("${SET}x"), "valuex");
        assert_eq!(ok("${UNSET:-d}|${EMPTY:-d}|${SET:-d}"), "d|d|value");
        assert_eq!(ok("${UNSET-d}|${EMPTY-d}|${SET-d}"), "d||value");
        assert_eq!(ok("${UNSET:+r}|${EMPTY:+r}|${SET:+r}"), "||r");
        assert_eq!(ok("${UNSET+r}|${EMPTY+r}|${SET+r}"), "|r|r");
        assert_eq!(ok("${SET:?boom}"), "value");
        assert_eq!(ok("${EMPTY?boom}"), "");
        assert_eq!(ok("${UNSET:-}"), "");
        assert_eq!(ok("${UNSET:-a b:c}"), "a b:c");
    }

    #[test]
    fn nested_defaults() {
        assert_eq!(ok("${UNSET:-${B}}"), "bee");
        assert_eq!(ok("${UNSET:-${ALSO:-deep}}"), "deep");
        assert_eq!(ok("${UNSET:-x${N}y}"), "x3y");
        assert_eq!(ok("${SET:+[${N}]}"), "[3]");
        assert_eq!(ok("${UNSET:-$$literal}"), "$literal");
    }

    #[test]
    fn required_reports_variable_and_message() {
        assert_eq!(
            run("${UNSET:?set UNSET to the domain}"),
            Err(InterpolationError::Required {
                var: "UNSET".into(),
                message: "set UNSET to the domain".into()
            })
        );
        assert!(matches!(
            run("${EMPTY:?m}"),
            Err(InterpolationError::Required { .. })
        ));
        assert!(matches!(
            run("${UNSET?}"),
            Err(InterpolationError::Required { .. })
        ));
        let err = run("${UNSET:?need ${B}}").expect_err("required");
        assert_eq!(
            err.to_string(),
            "required variable `UNSET` is not set: need bee"
        );
    }

    #[test]
    fn unset_without_default_is_empty_and_reported() {
        let out = run("a${NOPE}b$NOPE").expect("ok");
        assert_eq!(out.value, "ab");
        assert_eq!(out.unset, vec!["NOPE".to_string()]);
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "$",
            "a $ b",
            "${",
            "${SET",
            "${}",
            "${1A}",
            "${SET:x}",
            "${SET!}",
            "$1",
            "${UNSET:-${B}",
        ] {
            assert!(
                matches!(run(bad), Err(InterpolationError::Syntax { .. })),
                "{bad:?} should be a syntax error, got {:?}",
                run(bad)
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "${A:-".repeat(1000) + &"}".repeat(1000);
        assert!(matches!(run(&deep), Err(InterpolationError::Syntax { .. })));
        let ok_depth = "${A:-".repeat(MAX_NESTING) + "x" + &"}".repeat(MAX_NESTING);
        assert_eq!(run(&ok_depth).expect("within the bound").value, "x");
    }

    proptest! {
        #[test]
        fn escaped_text_round_trips(s in ".*") {
            prop_assert_eq!(run(&escape(&s)).expect("escaped text interpolates").value, s);
        }

        #[test]
        fn never_panics(s in "[\\PC${}:?+\\-_A-Z]*") {
            let _ = run(&s);
        }

        #[test]
        fn variables_substitute_exactly(prefix in "[^$]*", suffix in "[^$A-Za-z0-9_]*", value in ".*") {
            let template = format!("{prefix}$V{suffix}");
            let out = interpolate(&template, &|k| (k == "V").then(|| value.clone())).expect("ok");
            prop_assert_eq!(out.value, format!("{prefix}{value}{suffix}"));
        }
    }
}
