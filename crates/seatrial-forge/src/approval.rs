//! Which commit a `!testme` approves. A member's comment approves the pull request's head **as it
//! was when they commented**; a commit pushed after the comment is never run by it. The proof is
//! the forge's own record of pushes (the PR timeline's `pull_push` events, stamped by the forge —
//! commit dates are chosen by whoever made the commit and prove nothing):
//!
//! 1. a closed or merged pull request is not run;
//! 2. `!testme <sha>` approves that commit: it runs when the head is that commit, else nothing runs;
//! 3. otherwise, with `t` the time of the comment (its last edit, to the second):
//!    - a push recorded at or after `t` (same second included: the forge's clock has seconds)
//!      means the head may have moved since the member looked: nothing runs;
//!    - the newest push recorded before `t` must have left the current head; if it names
//!      another commit, the branch moved and the forge has not recorded it yet: nothing runs;
//!    - no push recorded at all: the head is the one the pull request was opened with, and runs.
//!
//! Refusals are answered on the PR, saying what to do (comment again, or name the commit).

use crate::client::{PullRequest, Push};

/// What a `!testme` comment may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// Run this commit (the full id).
    Run(String),
    Refuse(Refusal),
}

/// Why nothing runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Closed,
    Merged,
    /// Commits were pushed at or after the comment.
    PushedAfter {
        recorded_at: String,
        head: String,
    },
    /// `!testme <sha>` named a commit that is not the head.
    NotHead {
        asked: String,
        head: String,
    },
    /// The head is not the commit the forge's newest push record left, and nothing says when it
    /// moved.
    Unproven {
        head: String,
    },
    /// A time (the comment's or a push's) could not be read.
    BadTime {
        value: String,
    },
}

fn short(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}

impl Refusal {
    /// The reply to the member, naming what to do.
    pub fn explain(&self, prefix: &str) -> String {
        match self {
            Self::Closed => "this pull request is closed, so seatrial does not test it; nothing was queued.".into(),
            Self::Merged => "this pull request is already merged, so seatrial does not test it; nothing was queued.".into(),
            Self::PushedAfter { recorded_at, head } => format!(
                "commits were pushed to this pull request at {recorded_at}, after your comment, so it \
                 cannot approve them; nothing was queued. To test the head as it is now, comment \
                 `{prefix}` again or `{prefix} {}`.",
                short(head)
            ),
            Self::NotHead { asked, head } => format!(
                "`{asked}` is not the head of this pull request (the head is `{}`); nothing was \
                 queued. Comment `{prefix} {}` to test the head.",
                short(head),
                short(head)
            ),
            Self::Unproven { head } => format!(
                "the head of this pull request (`{}`) is not the commit the forge last recorded a \
                 push of, so seatrial cannot tell that it is the one you approved; nothing was \
                 queued. Comment `{prefix} {}` to test exactly that commit.",
                short(head),
                short(head)
            ),
            Self::BadTime { value } => format!(
                "the forge gave a time seatrial cannot read ({value:?}), so it cannot tell which \
                 commit you approved; nothing was queued. Comment `{prefix} <commit>` to name it."
            ),
        }
    }
}

/// The commit a comment made at `approved_at` (RFC 3339, the forge's time of its last edit)
/// approves, given the pull request as read now and the pushes recorded on it. `asked` is the
/// commit named by `!testme <sha>` (7 to 40 hex digits).
pub fn approved_commit(
    approved_at: &str,
    asked: Option<&str>,
    pull: &PullRequest,
    pushes: &[Push],
) -> Approval {
    let head = pull.head_sha.to_ascii_lowercase();
    if pull.merged {
        return Approval::Refuse(Refusal::Merged);
    }
    if !pull.open {
        return Approval::Refuse(Refusal::Closed);
    }
    if let Some(asked) = asked {
        let asked = asked.to_ascii_lowercase();
        return if asked.len() >= 7 && head.starts_with(&asked) {
            Approval::Run(head)
        } else {
            Approval::Refuse(Refusal::NotHead { asked, head })
        };
    }
    let Some(t) = unix_seconds(approved_at) else {
        return Approval::Refuse(Refusal::BadTime {
            value: approved_at.to_owned(),
        });
    };
    let mut before: Option<&Push> = None;
    for push in pushes {
        let Some(at) = unix_seconds(&push.recorded_at) else {
            return Approval::Refuse(Refusal::BadTime {
                value: push.recorded_at.clone(),
            });
        };
        if at >= t {
            return Approval::Refuse(Refusal::PushedAfter {
                recorded_at: push.recorded_at.clone(),
                head,
            });
        }
        before = Some(push);
    }
    match before.and_then(Push::new_head) {
        Some(left) if !left.eq_ignore_ascii_case(&head) => {
            Approval::Refuse(Refusal::Unproven { head })
        }
        _ => Approval::Run(head),
    }
}

/// Seconds since the Unix epoch of an RFC 3339 time (`2026-11-24T10:00:05Z`,
/// `2026-11-24T11:00:05+01:00`, fractions ignored) — forges answer in their own time zone.
pub fn unix_seconds(s: &str) -> Option<i64> {
    s.trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(head: &str) -> PullRequest {
        PullRequest {
            number: 1,
            open: true,
            merged: false,
            head_sha: head.to_owned(),
            head_clone_url: "https://git.example.org/a/r.git".into(),
            head_ref: "pr".into(),
        }
    }

    fn push(at: &str, ids: &[&str]) -> Push {
        Push {
            recorded_at: at.to_owned(),
            commit_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            force: false,
        }
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn times_from_any_zone() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_seconds("2026-11-24T10:00:05Z"), Some(1_795_514_405));
        assert_eq!(
            unix_seconds("2026-11-24T11:00:05+01:00"),
            unix_seconds("2026-11-24T10:00:05Z")
        );
        assert_eq!(
            unix_seconds("2026-11-24T05:00:05.123-05:00"),
            unix_seconds("2026-11-24T10:00:05Z")
        );
        assert_eq!(
            unix_seconds("2026-11-24t10:00:05z"),
            unix_seconds("2026-11-24T10:00:05Z")
        );
        assert_eq!(
            unix_seconds("2026-11-24 10:00:05Z"),
            unix_seconds("2026-11-24T10:00:05Z")
        );
        assert_eq!(
            unix_seconds("2026-11-24T10:00:05"),
            None,
            "no offset: no instant"
        );
        assert_eq!(unix_seconds(""), None);
        assert_eq!(unix_seconds("yesterday"), None);
        assert_eq!(unix_seconds("2026-13-01T00:00:00Z"), None);
    }

    /// Each situation and what runs, in one table.
    #[test]
    fn which_commit_a_comment_approves() {
        let at = "2026-11-24T10:00:05Z";
        let closed = PullRequest {
            open: false,
            ..pull(A)
        };
        let merged = PullRequest {
            open: false,
            merged: true,
            ..pull(A)
        };
        let cases: Vec<(&str, Approval)> = vec![
            (
                "never pushed since opened",
                approved_commit(at, None, &pull(A), &[]),
            ),
            (
                "pushed before, the push left the head",
                approved_commit(at, None, &pull(B), &[push("2026-11-24T10:00:04Z", &[A, B])]),
            ),
            (
                "pushed after the comment",
                approved_commit(at, None, &pull(B), &[push("2026-11-24T10:00:09Z", &[B])]),
            ),
            (
                "pushed in the same second",
                approved_commit(
                    at,
                    None,
                    &pull(B),
                    &[push("2026-11-24T11:00:05+01:00", &[B])],
                ),
            ),
            (
                "head moved, push not recorded yet",
                approved_commit(at, None, &pull(B), &[push("2026-11-24T10:00:01Z", &[A])]),
            ),
            (
                "named the head",
                approved_commit(
                    at,
                    Some("BBBBBBB"),
                    &pull(B),
                    &[push("2026-11-24T10:00:09Z", &[B])],
                ),
            ),
            (
                "named another commit",
                approved_commit(at, Some("aaaaaaa"), &pull(B), &[]),
            ),
            (
                "named too little",
                approved_commit(at, Some("bbb"), &pull(B), &[]),
            ),
            ("closed", approved_commit(at, None, &closed, &[])),
            ("merged", approved_commit(at, Some(A), &merged, &[])),
            ("no time", approved_commit("", None, &pull(A), &[])),
        ];
        let got: Vec<String> = cases
            .iter()
            .map(|(what, a)| {
                let a = format!("{a:?}").replace(A, "A").replace(B, "B");
                format!("{what}: {a}")
            })
            .collect();
        let expected = [
            "never pushed since opened: Run(\"A\")",
            "pushed before, the push left the head: Run(\"B\")",
            "pushed after the comment: Refuse(PushedAfter { recorded_at: \"2026-11-24T10:00:09Z\", head: \"B\" })",
            "pushed in the same second: Refuse(PushedAfter { recorded_at: \"2026-11-24T11:00:05+01:00\", head: \"B\" })",
            "head moved, push not recorded yet: Refuse(Unproven { head: \"B\" })",
            "named the head: Run(\"B\")",
            "named another commit: Refuse(NotHead { asked: \"aaaaaaa\", head: \"B\" })",
            "named too little: Refuse(NotHead { asked: \"bbb\", head: \"B\" })",
            "closed: Refuse(Closed)",
            "merged: Refuse(Merged)",
            "no time: Refuse(BadTime { value: \"\" })",
        ];
        assert_eq!(got, expected);
        let reply = Refusal::PushedAfter {
            recorded_at: "2026-11-24T10:00:09Z".into(),
            head: B.into(),
        }
        .explain("!testme");
        assert!(
            reply.contains("after your comment") && reply.contains("`!testme bbbbbbbbbb`"),
            "{reply}"
        );
    }
}
