//! Finding the line of a YAML file that a dotted path (`services.web.ports[0]`) points at, so
//! errors can name it. A best-effort reading of block-style YAML by indentation; `None` when the
//! path cannot be followed (flow style, anchors), never a wrong guess past the path's parent.

/// The 1-based line of `path` in `text`, or of the deepest part of it that was found.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .map(|l| (l.len() - l.trim_start().len(), l.trim_end()))
        .collect();
    let mut found: Option<usize> = None; // index into `lines`
    let mut parent_indent: Option<usize> = None;
    let mut from = 0;
    for segment in segments(path) {
        let scope_end = scope_end(&lines, from, parent_indent);
        let hit = match segment {
            Segment::Key(key) => (from..scope_end).find(|&i| {
                let (indent, l) = lines[i];
                parent_indent.is_none_or(|p| indent > p) && is_key_line(l.trim_start(), key)
            }),
            Segment::Index(n) => (from..scope_end)
                .filter(|&i| {
                    let (indent, l) = lines[i];
                    let t = l.trim_start();
                    parent_indent.is_none_or(|p| indent >= p) && (t == "-" || t.starts_with("- "))
                })
                .nth(n),
        };
        let Some(i) = hit else { break };
        found = Some(i);
        let (indent, l) = lines[i];
        // A list item's own keys sit two columns in from its dash.
        parent_indent = Some(match segment {
            Segment::Index(_) => indent + 1,
            Segment::Key(_) if l.trim_start().starts_with("- ") => indent + 2,
            Segment::Key(_) => indent,
        });
        from = i + 1;
        if let Segment::Index(_) = segment {
            // Keys of a `- key: v` item start on the item's own line.
            from = i;
        }
    }
    found.map(|i| i + 1)
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        for idx in rest.split('[') {
            if let Ok(n) = idx.trim_end_matches(']').parse() {
                out.push(Segment::Index(n));
            }
        }
    }
    out
}

/// The first line after `from` that leaves the block of a parent at `parent_indent`.
fn scope_end(lines: &[(usize, &str)], from: usize, parent_indent: Option<usize>) -> usize {
    let Some(p) = parent_indent else {
        return lines.len();
    };
    (from..lines.len())
        .find(|&i| {
            let (indent, l) = lines[i];
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#') && indent < p && i > from
        })
        .unwrap_or(lines.len())
}

fn is_key_line(trimmed: &str, key: &str) -> bool {
    let t = trimmed.strip_prefix("- ").unwrap_or(trimmed);
    [key.to_owned(), format!("\"{key}\""), format!("'{key}'")]
        .iter()
        .any(|k| {
            t.strip_prefix(k.as_str())
                .is_some_and(|r| r.starts_with(':'))
        })
}

#[cfg(test)]
mod tests {
    use super::line_of;

    const TEXT: &str = "services:\n  web:\n    image: x\n    ports:\n      - \"80:80\"\n      - target: 81\n        published: ${P:+x}\n  db:\n    image: y\nvolumes:\n  image: {}\n";

    #[test]
    fn follows_keys_and_list_items() {
        assert_eq!(line_of(TEXT, "services.web.image"), Some(3));
        assert_eq!(line_of(TEXT, "services.web.ports[0]"), Some(5));
        assert_eq!(line_of(TEXT, "services.web.ports[1].published"), Some(7));
        assert_eq!(line_of(TEXT, "services.db.image"), Some(9));
        assert_eq!(line_of(TEXT, "volumes.image"), Some(11));
        assert_eq!(
            line_of(TEXT, "services.db.nothere"),
            Some(8),
            "the deepest part found"
        );
        assert_eq!(line_of(TEXT, "nothere"), None);
    }
}
