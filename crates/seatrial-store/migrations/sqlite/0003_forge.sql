-- Forge polling: per repository, the `updated_at` of the newest comment seen (RFC 3339).
CREATE TABLE forge_cursors (
    repo TEXT PRIMARY KEY,
    since TEXT NOT NULL
);
-- Where a run reports back: the PR, its head commit, the one comment edited as the run goes.
CREATE TABLE forge_reports (
    run_id BIGINT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    repo TEXT NOT NULL,
    pr_number BIGINT NOT NULL,
    sha TEXT NOT NULL,
    comment_id BIGINT,
    reported_state TEXT
);
