//! Comment commands: `!testme`, `!testme <commit>`, `!testme --quick`, `!testme help`. A command is a line of its
//! own that starts with the prefix; lines inside fenced or indented code blocks and quoted lines
//! (`> …`, as when someone quotes an earlier `!testme`) are never commands.

/// What a comment asks of seatrial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Test the pull request's head as it was when the comment was made — or, with `commit`
    /// (7 to 40 hex digits), exactly that commit, which must be the head; `quick` against a warm
    /// copy.
    Test { quick: bool, commit: Option<String> },
    /// Reply with the usage.
    Help,
}

/// Why a command line could not be understood; the reply carries the usage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown option `{flag}`")]
    UnknownFlag { flag: String },
    #[error("unexpected `{word}`")]
    UnexpectedWord { word: String },
    #[error("`{flag}` was given more than once")]
    Repeated { flag: String },
}

/// The usage text replied on `help` and on errors.
pub fn usage(prefix: &str) -> String {
    format!(
        "`{prefix}` — deploy this pull request's head for real: install the previous release, \
         upgrade to this change, run the recipe's tests, tear down (a cold trial).\n\
         `{prefix} <commit>` — the same, for exactly that commit (it must be the head); a push \
         after your comment is never tested by it either way.\n\
         `{prefix} --quick` — a faster, lower-confidence trial against a warm known-good copy.\n\
         `{prefix} help` — this text."
    )
}

/// The first command in `body`, if the comment has one. `prefix` is the configured command
/// (default `!testme`).
pub fn parse_comment(body: &str, prefix: &str) -> Option<Result<Command, CommandError>> {
    let mut fence: Option<&str> = None;
    for line in body.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let trimmed = line.trim();
        // Fenced code: ``` or ~~~ (up to 3 spaces in), closed by the same marker.
        if indent <= 3 {
            let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
            match (fence, marker) {
                (None, Some(m)) => {
                    fence = Some(m);
                    continue;
                }
                (Some(open), Some(m)) if open == m => {
                    fence = None;
                    continue;
                }
                _ => {}
            }
        }
        if fence.is_some() || indent >= 4 || line.starts_with('\t') || trimmed.starts_with('>') {
            continue;
        }
        let Some(rest) = trimmed.strip_prefix(prefix) else {
            continue;
        };
        // `!testmeplease` is not `!testme`.
        if rest.chars().next().is_some_and(|c| !c.is_whitespace()) {
            continue;
        }
        return Some(parse_args(rest.split_whitespace()));
    }
    None
}

fn parse_args<'a>(words: impl Iterator<Item = &'a str>) -> Result<Command, CommandError> {
    let mut quick = false;
    let mut help = false;
    let mut commit: Option<String> = None;
    for word in words {
        match word {
            w if (7..=40).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_hexdigit()) => {
                if commit.is_some() {
                    return Err(CommandError::UnexpectedWord { word: w.to_owned() });
                }
                commit = Some(w.to_ascii_lowercase());
            }
            "--quick" | "-q" if quick => {
                return Err(CommandError::Repeated {
                    flag: word.to_owned(),
                });
            }
            "--quick" | "-q" => quick = true,
            "help" | "--help" | "-h" => help = true,
            w if w.starts_with('-') => {
                return Err(CommandError::UnknownFlag { flag: w.to_owned() });
            }
            w => {
                return Err(CommandError::UnexpectedWord { word: w.to_owned() });
            }
        }
    }
    Ok(if help {
        Command::Help
    } else {
        Command::Test { quick, commit }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each comment and what seatrial makes of it, in one readable table (a snapshot: a change
    /// in behaviour shows as a changed line here).
    #[test]
    fn comments_and_what_they_ask() {
        let cases: &[(&str, &str)] = &[
            ("!testme", "Some(Ok(Test { quick: false, commit: None }))"),
            (
                "  !testme  ",
                "Some(Ok(Test { quick: false, commit: None }))",
            ),
            (
                "!testme --quick",
                "Some(Ok(Test { quick: true, commit: None }))",
            ),
            (
                "Looks good.\r\n!testme -q\r\nthanks",
                "Some(Ok(Test { quick: true, commit: None }))",
            ),
            ("!testme help", "Some(Ok(Help))"),
            (
                "!testme 3FA2B1C",
                "Some(Ok(Test { quick: false, commit: Some(\"3fa2b1c\") }))",
            ),
            (
                "!testme abcdef0 abcdef1",
                "Some(Err(UnexpectedWord { word: \"abcdef1\" }))",
            ),
            ("!testme abc", "Some(Err(UnexpectedWord { word: \"abc\" }))"),
            ("!testme --quick help", "Some(Ok(Help))"),
            (
                "!testme --fast",
                "Some(Err(UnknownFlag { flag: \"--fast\" }))",
            ),
            (
                "!testme please",
                "Some(Err(UnexpectedWord { word: \"please\" }))",
            ),
            (
                "!testme --quick --quick",
                "Some(Err(Repeated { flag: \"--quick\" }))",
            ),
            ("!testmeplease", "None"),
            ("please run !testme", "None"),
            ("`!testme`", "None"),
            ("> !testme\n\nWhy did this fail?", "None"),
            ("```\n!testme\n```", "None"),
            ("~~~sh\n!testme --quick\n~~~\n", "None"),
            ("    !testme", "None"),
            ("\t!testme", "None"),
            (
                "```\ncode\n```\n!testme",
                "Some(Ok(Test { quick: false, commit: None }))",
            ),
            ("", "None"),
        ];
        let mut failures = Vec::new();
        for (comment, expected) in cases {
            let got = format!("{:?}", parse_comment(comment, "!testme"));
            if got != *expected {
                failures.push(format!("{comment:?}: expected {expected}, got {got}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn the_prefix_is_configurable_and_errors_read_well() {
        assert_eq!(
            parse_comment("/seatrial --quick", "/seatrial"),
            Some(Ok(Command::Test {
                quick: true,
                commit: None
            }))
        );
        assert_eq!(parse_comment("!testme", "/seatrial"), None);
        let err = parse_comment("!testme --fast", "!testme")
            .expect("a command")
            .expect_err("unknown flag");
        assert_eq!(err.to_string(), "unknown option `--fast`");
        let u = usage("!testme");
        assert!(
            u.contains("`!testme --quick`") && u.contains("`!testme help`"),
            "{u}"
        );
    }
}
