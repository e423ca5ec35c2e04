//! Positions in SQL files: statement boundaries (for naming the statement PostgreSQL rejected
//! when its error carries no position) and character positions turned into lines and columns.

/// The statements of a script as `(byte offset of the statement's first token, text)`.
///
/// Splits on `;` outside strings (`'…'`, `E'…'`), quoted identifiers, comments (`--`, nested
/// `/* */`) and dollar quotes (`$tag$…$tag$`). Only used to say *where* a script failed: the
/// verdict always comes from running the whole script.
pub fn statements(sql: &str) -> Vec<(usize, &str)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => {
                let backslash = i > 0 && matches!(b[i - 1], b'E' | b'e');
                i += 1;
                while i < b.len() {
                    if backslash && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'$' if dollar_tag(b, i).is_some() => {
                let tag_len = dollar_tag(b, i).unwrap_or(1);
                let tag = &b[i..i + tag_len];
                i += tag_len;
                while i < b.len() && !b[i..].starts_with(tag) {
                    i += 1;
                }
                i += tag_len;
            }
            b';' => {
                push_statement(sql, start, i + 1, &mut out);
                start = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    push_statement(sql, start, sql.len(), &mut out);
    out
}

/// The length of the dollar-quote opener at `i` (`$$` or `$tag$`), if one starts there.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
        return None; // part of an identifier like `a$b`
    }
    let mut j = i + 1;
    if b.get(j).is_some_and(u8::is_ascii_digit) {
        return None; // a parameter like `$1`
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1 - i)
}

fn push_statement<'a>(sql: &'a str, start: usize, end: usize, out: &mut Vec<(usize, &'a str)>) {
    let end = end.min(sql.len());
    let text = &sql[start..end];
    // Skip leading blank space and whole-line comments, so the offset is the first token's.
    let mut offset = 0;
    loop {
        let rest = &text[offset..];
        let trimmed = rest.trim_start();
        offset += rest.len() - trimmed.len();
        if trimmed.starts_with("--") {
            offset += trimmed.find('\n').map_or(trimmed.len(), |n| n + 1);
            continue;
        }
        break;
    }
    let body = text[offset..].trim_end();
    if !body.is_empty() && body != ";" {
        out.push((start + offset, body));
    }
}

/// PostgreSQL's error position (1-based, in characters) as a byte offset into `text`.
pub fn char_position_to_byte(text: &str, position: usize) -> usize {
    text.char_indices()
        .nth(position.saturating_sub(1))
        .map_or(text.len(), |(b, _)| b)
}

/// The 1-based line and column of a byte offset.
pub fn line_col(text: &str, byte: usize) -> (usize, usize) {
    let before = &text[..byte.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_comments_and_dollar_bodies() {
        let sql = "-- header\nCREATE TABLE a (x text DEFAULT ';');\n\
                   /* a; comment /* nested; */ */ INSERT INTO \"we;ird\" VALUES (E'\\';');\n\
                   CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n\
                   DO $$ BEGIN PERFORM 1; END $$;\nSELECT $1";
        let got: Vec<&str> = statements(sql).iter().map(|(_, s)| *s).collect();
        assert_eq!(got.len(), 5, "{got:#?}");
        assert!(got[0].starts_with("CREATE TABLE a"));
        assert!(got[1].starts_with("/* a; comment"));
        assert!(got[2].starts_with("CREATE FUNCTION") && got[2].ends_with("LANGUAGE sql;"));
        assert!(got[3].starts_with("DO $$"));
        assert_eq!(got[4], "SELECT $1");
        let (off, _) = statements(sql)[0];
        assert_eq!(line_col(sql, off), (2, 1));
    }

    #[test]
    fn positions_are_characters_not_bytes() {
        let text = "-- é\nSELEC 1;";
        let b = char_position_to_byte(text, 6);
        assert_eq!(&text[b..b + 5], "SELEC");
        assert_eq!(line_col(text, b), (2, 1));
    }
}
