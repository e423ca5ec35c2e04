//! The Gitea client against the fake Gitea: paging, ETags, fail-closed membership, retries,
//! and what it writes back to pull requests.

use std::time::{Duration, Instant};

use seatrial_forge::fake::FakeForge;
use seatrial_forge::{Forge, Gitea, Membership, RepoName, StatusState, Token};

const TOKEN: &str = "forge-token-5b1e7";

fn client(forge: &FakeForge, token: &str, timeout: Duration) -> Gitea {
    Gitea::new(&forge.url, Token::new(token), timeout).expect("client")
}

fn repo() -> RepoName {
    "coop/recipe".parse().expect("repo")
}

#[tokio::test]
async fn comments_page_and_come_back_only_when_changed() {
    let forge = FakeForge::start(TOKEN).await;
    let gitea = client(&forge, TOKEN, Duration::from_secs(5));
    assert_eq!(gitea.me().await.expect("me"), "seatrial-bot");
    for i in 0..120 {
        forge.post_comment("coop/recipe", 1 + i % 3, "alice", &format!("comment {i}"));
    }
    forge.post_comment("coop/other", 9, "bob", "elsewhere");
    let before = forge.requests();
    let all = gitea.comments_since(&repo(), None).await.expect("comments");
    assert_eq!(all.len(), 120, "every page was read");
    assert_eq!(
        forge.requests() - before,
        3,
        "120 comments are 3 pages of 50"
    );
    assert_eq!(all[0].body, "comment 0");
    assert_eq!(
        (all[0].number, all[0].on_pull, all[0].user.as_str()),
        (Some(1), true, "alice")
    );

    // Nothing new: one request per page, answered 304 from the ETag, same result.
    let since = all.last().expect("last").updated_at.clone();
    let first = gitea
        .comments_since(&repo(), Some(&since))
        .await
        .expect("comments");
    assert_eq!(first.len(), 1, "`since` includes the last one seen");
    let before = forge.requests();
    let again = gitea
        .comments_since(&repo(), Some(&since))
        .await
        .expect("comments");
    assert_eq!(again, first);
    assert_eq!(
        forge.requests() - before,
        1,
        "one request when nothing changed"
    );

    // An edited comment comes back with `since`.
    let id = all[5].id;
    forge.edit_comment(id, "!testme");
    let changed = gitea
        .comments_since(&repo(), Some(&since))
        .await
        .expect("comments");
    assert!(
        changed.iter().any(|c| c.id == id && c.body == "!testme"),
        "{changed:?}"
    );
}

#[tokio::test]
async fn membership_fails_closed() {
    let forge = FakeForge::start(TOKEN).await;
    forge.add_member("coop", "alice");
    forge.redirect_membership("hidden");
    forge.add_member("hidden", "alice");
    forge.stall_membership("slow");
    let gitea = client(&forge, TOKEN, Duration::from_secs(1));
    assert_eq!(gitea.membership("coop", "alice").await, Membership::Member);
    assert!(
        matches!(gitea.membership("coop", "mallory").await, Membership::Denied(why) if why.contains("404"))
    );
    assert!(
        matches!(gitea.membership("hidden", "alice").await, Membership::Denied(why) if why.contains("303")),
        "a redirect is never followed: it denies"
    );
    let started = Instant::now();
    assert!(matches!(
        gitea.membership("slow", "alice").await,
        Membership::Denied(_)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a timeout denies, after retries"
    );
    let wrong = client(&forge, "not-the-token", Duration::from_secs(5));
    assert!(matches!(
        wrong.membership("coop", "alice").await,
        Membership::Denied(_)
    ));
}

#[tokio::test]
async fn transient_errors_are_retried_and_errors_never_show_the_token() {
    let forge = FakeForge::start(TOKEN).await;
    forge.open_pull(
        "coop/recipe",
        4,
        &"a".repeat(40),
        "https://fork.example/alice/recipe.git",
    );
    let gitea = client(&forge, TOKEN, Duration::from_secs(5));
    forge.fail_next(&[502, 429]);
    let pr = gitea
        .pull(&repo(), 4)
        .await
        .expect("retried until it worked");
    assert_eq!(pr.head_sha, "a".repeat(40));
    assert_eq!(
        pr.head_clone_url, "https://fork.example/alice/recipe.git",
        "the head (fork) repository"
    );
    assert!(pr.open);
    forge.fail_next(&[500, 500, 500, 500, 500]);
    let err = gitea
        .pull(&repo(), 4)
        .await
        .expect_err("gives up after its retries");
    assert!(err.transient(), "{err}");

    let wrong = client(&forge, "wrong-token-xyz", Duration::from_secs(5));
    let err = wrong.pull(&repo(), 4).await.expect_err("401").to_string();
    assert!(err.contains("401"), "{err}");
    assert!(
        !err.contains("wrong-token-xyz") && !err.contains(TOKEN),
        "{err}"
    );
    assert_eq!(format!("{:?}", Token::new(TOKEN)), "Token(***)");
}

#[tokio::test]
async fn statuses_and_comments_reach_the_pull_request() {
    let forge = FakeForge::start(TOKEN).await;
    let gitea = client(&forge, TOKEN, Duration::from_secs(5));
    let sha = "b".repeat(40);
    gitea
        .set_status(
            &repo(),
            &sha,
            StatusState::Pending,
            "http://seatrial/runs/1",
            "queued",
            "seatrial/cold",
        )
        .await
        .expect("status");
    gitea
        .set_status(
            &repo(),
            &sha,
            StatusState::Success,
            "http://seatrial/runs/1",
            "passed",
            "seatrial/cold",
        )
        .await
        .expect("status");
    let states: Vec<String> = forge.statuses(&sha).into_iter().map(|s| s.state).collect();
    assert_eq!(states, vec!["pending", "success"]);
    assert_eq!(forge.statuses(&sha)[1].context, "seatrial/cold");

    let id = gitea
        .comment(&repo(), 3, "queued (position 1)")
        .await
        .expect("comment");
    gitea
        .edit_comment(&repo(), id, "passed")
        .await
        .expect("edit");
    let on_pr = forge.comments("coop/recipe", 3);
    assert_eq!(on_pr.len(), 1, "one comment, edited in place");
    assert_eq!(
        (on_pr[0].body.as_str(), on_pr[0].user.as_str()),
        ("passed", "seatrial-bot")
    );
}
