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

#[tokio::test]
async fn retry_after_is_honoured_in_seconds_and_as_a_date() {
    let forge = FakeForge::start(TOKEN).await;
    forge.open_pull("coop/recipe", 4, &"a".repeat(40), "/r.git");
    let gitea = client(&forge, TOKEN, Duration::from_secs(5));

    forge.fail_next_with_retry_after(429, "2");
    let started = Instant::now();
    gitea
        .pull(&repo(), 4)
        .await
        .expect("retried after the wait");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(4),
        "Retry-After: 2 waits 2 s (plus a little jitter), not the 200 ms backoff: {waited:?}"
    );

    let at = std::time::SystemTime::now() + Duration::from_secs(3);
    forge.fail_next_with_retry_after(503, &httpdate::fmt_http_date(at));
    let started = Instant::now();
    gitea
        .pull(&repo(), 4)
        .await
        .expect("retried after the date");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "an HTTP date about 3 s away (to the second) is waited for: {waited:?}"
    );

    // Asked to come back in two minutes: the call gives the error back instead of hanging.
    forge.fail_next_with_retry_after(429, "120");
    let (before, started) = (forge.requests(), Instant::now());
    let err = gitea.pull(&repo(), 4).await.expect_err("not waited for");
    assert!(err.to_string().contains("429"), "{err}");
    assert_eq!(forge.requests() - before, 1);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_comment_is_never_posted_twice() {
    let forge = FakeForge::start(TOKEN).await;
    let gitea =
        client(&forge, TOKEN, Duration::from_secs(1)).with_retries(3, Duration::from_millis(50));

    // The forge creates the comment, but its answer comes after the client gave up: a network
    // error after the request was sent. Retrying would post a second comment.
    forge.stall_comment_creation("", Duration::from_secs(2));
    let before = forge.requests();
    let err = gitea
        .comment(&repo(), 5, "queued")
        .await
        .expect_err("timed out");
    assert!(
        matches!(err, seatrial_forge::ForgeError::Unreachable { .. }),
        "{err}"
    );
    assert_eq!(forge.requests() - before, 1, "not retried");
    forge.stop_stalling();
    assert_eq!(
        forge.comments("coop/recipe", 5).len(),
        1,
        "exactly one comment"
    );

    // A 500 may come after the comment was stored: not retried either.
    forge.fail_next(&[500]);
    let before = forge.requests();
    gitea
        .comment(&repo(), 6, "queued")
        .await
        .expect_err("500 is given back");
    assert_eq!(
        forge.requests() - before,
        1,
        "a 500 is not retried for a new comment"
    );

    // 429 and 503 are refusals before anything was created: retried, one comment results.
    forge.fail_next(&[503, 429]);
    gitea
        .comment(&repo(), 7, "queued")
        .await
        .expect("retried after refusals");
    assert_eq!(forge.comments("coop/recipe", 7).len(), 1);

    // Edits are idempotent: retried through a 502.
    let id = forge.comments("coop/recipe", 7)[0].id;
    forge.fail_next(&[502]);
    gitea
        .edit_comment(&repo(), id, "passed")
        .await
        .expect("an edit is retried");
    assert_eq!(forge.comments("coop/recipe", 7)[0].body, "passed");

    // The PR's comments can be listed, to find a comment whose creation was not confirmed.
    let on_pr = gitea.pull_comments(&repo(), 5).await.expect("list");
    assert_eq!(on_pr.len(), 1);
    assert_eq!(on_pr[0].body, "queued");
}

#[tokio::test]
async fn the_etag_cache_stays_bounded() {
    let forge = FakeForge::start(TOKEN).await;
    let gitea = client(&forge, TOKEN, Duration::from_secs(5))
        .with_etag_cache(std::num::NonZeroUsize::new(3).expect("non-zero"), 64 * 1024);
    let repos: Vec<RepoName> = (0..10)
        .map(|i| format!("coop/r{i}").parse().expect("repo"))
        .collect();
    for r in &repos {
        forge.post_comment(&r.to_string(), 1, "alice", "hello");
        gitea.comments_since(r, None).await.expect("comments");
        let (entries, bytes) = gitea.etag_cache_size();
        assert!(entries <= 3, "at most 3 answers kept: {entries}");
        assert!(bytes <= 64 * 1024, "{bytes}");
    }
    assert_eq!(gitea.etag_cache_size().0, 3);
    // The most recent still saves a full answer; an evicted one is simply read again.
    let before = forge.requests();
    let last = gitea.comments_since(&repos[9], None).await.expect("cached");
    let first = gitea
        .comments_since(&repos[0], None)
        .await
        .expect("evicted");
    assert_eq!((last.len(), first.len()), (1, 1));
    assert_eq!(forge.requests() - before, 2, "one request each");

    // A byte budget smaller than one answer keeps nothing rather than growing.
    let tiny = client(&forge, TOKEN, Duration::from_secs(5))
        .with_etag_cache(std::num::NonZeroUsize::new(100).expect("non-zero"), 10);
    tiny.comments_since(&repos[0], None)
        .await
        .expect("comments");
    assert_eq!(tiny.etag_cache_size(), (0, 0));
}

#[tokio::test]
async fn pushes_and_states_of_a_pull_request() {
    let forge = FakeForge::start(TOKEN).await;
    let (a, b, c) = ("a".repeat(40), "b".repeat(40), "c".repeat(40));
    forge.open_pull("coop/recipe", 2, &a, "/r.git");
    // More than a page of timeline (50): the push is on the second page.
    for i in 0..55 {
        forge.post_comment("coop/recipe", 2, "alice", &format!("c{i}"));
    }
    forge.push("coop/recipe", 2, &[&b]);
    forge.force_push("coop/recipe", 2, &c);
    let gitea = client(&forge, TOKEN, Duration::from_secs(5));
    let pushes = gitea.pushes(&repo(), 2).await.expect("timeline");
    assert_eq!(pushes.len(), 2, "{pushes:?}");
    assert_eq!(pushes[0].commit_ids, vec![b.clone()]);
    assert!(!pushes[0].force);
    assert_eq!(
        pushes[1].commit_ids,
        vec![b.clone(), c.clone()],
        "force: [old, new]"
    );
    assert_eq!(pushes[1].new_head(), Some(c.as_str()));
    assert!(pushes[0].recorded_at < pushes[1].recorded_at);
    let pr = gitea.pull(&repo(), 2).await.expect("pull");
    assert_eq!(
        (pr.head_sha.as_str(), pr.open, pr.merged),
        (c.as_str(), true, false)
    );
    forge.merge_pull("coop/recipe", 2);
    let pr = gitea.pull(&repo(), 2).await.expect("pull");
    assert_eq!((pr.open, pr.merged), (false, true));
}
