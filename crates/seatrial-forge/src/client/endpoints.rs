//! The Gitea API calls seatrial makes, the JSON shapes Gitea answers in, and RFC 5988 paging.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::retry::Replay;
use super::{
    Comment, Forge, ForgeError, Gitea, Membership, PullRequest, Push, RepoName, StatusState,
};

#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct RawComment {
    id: i64,
    #[serde(default)]
    body: String,
    user: Option<User>,
    #[serde(default)]
    pull_request_url: String,
    #[serde(default)]
    issue_url: String,
    #[serde(default)]
    updated_at: String,
}

#[derive(Deserialize)]
struct RawRepo {
    clone_url: Option<String>,
}

#[derive(Deserialize)]
struct RawBranch {
    #[serde(rename = "ref", default)]
    reference: String,
    sha: String,
    repo: Option<RawRepo>,
}

#[derive(Deserialize)]
struct RawTimelineEvent {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    created_at: String,
}

/// The body of a `pull_push` timeline event (Gitea's `PushActionContent`).
#[derive(Deserialize)]
struct RawPushContent {
    #[serde(default)]
    is_force_push: bool,
    #[serde(default)]
    commit_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawPull {
    number: i64,
    state: String,
    #[serde(default)]
    merged: bool,
    head: RawBranch,
    base: Option<RawBranch>,
}

/// The `rel="next"` target of an RFC 5988 `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

fn number_from(url: &str) -> Option<i64> {
    url.trim_end_matches('/').rsplit('/').next()?.parse().ok()
}

/// What stays as it is in a path segment or query value: RFC 3986's unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` percent-encoded for one path segment or query value.
fn enc(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

#[async_trait::async_trait]
impl Forge for Gitea {
    async fn me(&self) -> Result<String, ForgeError> {
        let what = "reading seatrial's own forge account";
        let (text, _) = self.get_json(what, &format!("{}/user", self.base)).await?;
        Ok(Self::decode::<User>(what, &text)?.login)
    }

    async fn comments_since(
        &self,
        repo: &RepoName,
        since: Option<&str>,
    ) -> Result<Vec<Comment>, ForgeError> {
        let what = format!("listing the comments of {repo}");
        let mut url = format!(
            "{}/repos/{}/{}/issues/comments?limit=50",
            self.base,
            enc(&repo.owner),
            enc(&repo.name)
        );
        if let Some(s) = since {
            url.push_str(&format!("&since={}", enc(s)));
        }
        let mut out = Vec::new();
        let mut next = Some(url);
        while let Some(url) = next.take() {
            let (text, link) = self.get_json(&what, &url).await?;
            let page: Vec<RawComment> = Self::decode(&what, &text)?;
            out.extend(page.into_iter().map(|c| Comment {
                id: c.id,
                body: c.body,
                user: c.user.map(|u| u.login).unwrap_or_default(),
                on_pull: !c.pull_request_url.is_empty(),
                number: number_from(if c.pull_request_url.is_empty() {
                    &c.issue_url
                } else {
                    &c.pull_request_url
                }),
                updated_at: c.updated_at,
            }));
            next = link
                .as_deref()
                .and_then(next_link)
                .map(|n| self.absolute(&n));
        }
        Ok(out)
    }

    async fn pull(&self, repo: &RepoName, number: i64) -> Result<PullRequest, ForgeError> {
        let what = format!("reading pull request {repo}#{number}");
        let url = format!(
            "{}/repos/{}/{}/pulls/{number}",
            self.base,
            enc(&repo.owner),
            enc(&repo.name)
        );
        let (text, _) = self.get_json(&what, &url).await?;
        let raw: RawPull = Self::decode(&what, &text)?;
        let head_clone_url = raw
            .head
            .repo
            .as_ref()
            .and_then(|r| r.clone_url.clone())
            .or_else(|| raw.base.as_ref()?.repo.as_ref()?.clone_url.clone())
            .ok_or_else(|| ForgeError::Decode {
                what: what.clone(),
                message: "the pull request names no head repository clone URL".into(),
            })?;
        Ok(PullRequest {
            number: raw.number,
            open: raw.state == "open" && !raw.merged,
            merged: raw.merged,
            head_sha: raw.head.sha,
            head_clone_url,
            head_ref: raw.head.reference,
        })
    }

    async fn pushes(&self, repo: &RepoName, number: i64) -> Result<Vec<Push>, ForgeError> {
        let what = format!("reading the timeline of {repo}#{number}");
        // Gitea pages the timeline with `page`/`limit` and no `Link` header: read pages until
        // one comes back short.
        const LIMIT: usize = 50;
        let mut out = Vec::new();
        for page in 1.. {
            let url = format!(
                "{}/repos/{}/{}/issues/{number}/timeline?limit={LIMIT}&page={page}",
                self.base,
                enc(&repo.owner),
                enc(&repo.name)
            );
            let (text, _) = self.get_json(&what, &url).await?;
            let events: Vec<RawTimelineEvent> = Self::decode(&what, &text)?;
            let n = events.len();
            for e in events.into_iter().filter(|e| e.kind == "pull_push") {
                let content: RawPushContent = Self::decode(&what, &e.body)?;
                out.push(Push {
                    recorded_at: e.created_at,
                    commit_ids: content.commit_ids,
                    force: content.is_force_push,
                });
            }
            if n < LIMIT || page >= 200 {
                break;
            }
        }
        Ok(out)
    }

    async fn pull_comments(
        &self,
        repo: &RepoName,
        number: i64,
    ) -> Result<Vec<Comment>, ForgeError> {
        let what = format!("listing the comments of {repo}#{number}");
        let url = format!(
            "{}/repos/{}/{}/issues/{number}/comments",
            self.base,
            enc(&repo.owner),
            enc(&repo.name)
        );
        let (text, _) = self.get_json(&what, &url).await?;
        let raw: Vec<RawComment> = Self::decode(&what, &text)?;
        Ok(raw
            .into_iter()
            .map(|c| Comment {
                id: c.id,
                body: c.body,
                user: c.user.map(|u| u.login).unwrap_or_default(),
                number: Some(number),
                on_pull: !c.pull_request_url.is_empty(),
                updated_at: c.updated_at,
            })
            .collect())
    }

    async fn membership(&self, org: &str, user: &str) -> Membership {
        let url = format!("{}/orgs/{}/members/{}", self.base, enc(org), enc(user));
        match self
            .send(
                "checking organisation membership",
                reqwest::Method::GET,
                &url,
                None,
                false,
                Replay::Safe,
            )
            .await
        {
            Ok((204, _, _)) => Membership::Member,
            Ok((status, _, _)) => Membership::Denied(format!(
                "{user} is not a member of {org} (the forge answered {status})"
            )),
            Err(e) => Membership::Denied(format!("the membership check failed: {e}")),
        }
    }

    async fn set_status(
        &self,
        repo: &RepoName,
        sha: &str,
        state: StatusState,
        target_url: &str,
        description: &str,
        context: &str,
    ) -> Result<(), ForgeError> {
        let url = format!(
            "{}/repos/{}/{}/statuses/{}",
            self.base,
            enc(&repo.owner),
            enc(&repo.name),
            enc(sha)
        );
        let body = serde_json::json!({
            "state": state.as_str(),
            "target_url": target_url,
            "description": description.chars().take(140).collect::<String>(),
            "context": context,
        });
        self.write(
            &format!("setting the commit status of {repo}@{sha}"),
            reqwest::Method::POST,
            &url,
            &body,
            &[200, 201],
            Replay::Safe,
        )
        .await
        .map(|_| ())
    }

    async fn comment(&self, repo: &RepoName, number: i64, body: &str) -> Result<i64, ForgeError> {
        let what = format!("commenting on {repo}#{number}");
        let url = format!(
            "{}/repos/{}/{}/issues/{number}/comments",
            self.base,
            enc(&repo.owner),
            enc(&repo.name)
        );
        let text = self
            .write(
                &what,
                reqwest::Method::POST,
                &url,
                &serde_json::json!({ "body": body }),
                &[200, 201],
                Replay::Once,
            )
            .await?;
        #[derive(Deserialize)]
        struct Created {
            id: i64,
        }
        Ok(Self::decode::<Created>(&what, &text)?.id)
    }

    async fn edit_comment(&self, repo: &RepoName, id: i64, body: &str) -> Result<(), ForgeError> {
        let url = format!(
            "{}/repos/{}/{}/issues/comments/{id}",
            self.base,
            enc(&repo.owner),
            enc(&repo.name)
        );
        self.write(
            &format!("editing comment {id} on {repo}"),
            reqwest::Method::PATCH,
            &url,
            &serde_json::json!({ "body": body }),
            &[200, 201],
            Replay::Safe,
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Token;

    #[test]
    fn link_headers_and_names() {
        let link = "<https://git.example.org/api/v1/repos/o/r/issues/comments?limit=50&page=2>; rel=\"next\", <https://git.example.org/api/v1/repos/o/r/issues/comments?limit=50&page=4>; rel=\"last\"";
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://git.example.org/api/v1/repos/o/r/issues/comments?limit=50&page=2")
        );
        assert_eq!(next_link("<x>; rel=\"prev\""), None);
        assert_eq!(number_from("https://g/o/r/pulls/12"), Some(12));
        assert!("owner/name".parse::<RepoName>().is_ok());
        assert!("owner".parse::<RepoName>().is_err());
        assert!("a/b/c".parse::<RepoName>().is_err());
        assert_eq!(format!("{:?}", Token::new("s3cret")), "Token(***)");
        assert_eq!(
            enc("2026-11-24T10:00:05+01:00"),
            "2026-11-24T10%3A00%3A05%2B01%3A00"
        );
        assert_eq!(enc("a b/é~"), "a%20b%2F%C3%A9~");
    }
}
