-- Runs, the queue (state + lease), their stages and log lines, and seen forge comments.
-- Later: canonicals, releases, alerts get tables of their own.
CREATE TABLE runs (
    id BIGSERIAL PRIMARY KEY,
    recipe TEXT NOT NULL,
    reference TEXT,
    repo TEXT,
    pr_number BIGINT,
    commit_sha TEXT,
    mode TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,
    requested_by TEXT,
    state TEXT NOT NULL,
    attempt BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT,
    finished_at_ms BIGINT,
    lease_owner TEXT,
    lease_expires_at_ms BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    stack TEXT,
    reason TEXT,
    timeout_secs BIGINT
);
CREATE INDEX runs_state_id ON runs (state, id);
CREATE INDEX runs_recipe_id ON runs (recipe, id);
CREATE INDEX runs_mode_id ON runs (mode, id);

CREATE TABLE stages (
    run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    name TEXT NOT NULL,
    result TEXT NOT NULL,
    started_at TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE logs (
    run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE seen_comments (
    forge TEXT NOT NULL,
    comment_id BIGINT NOT NULL,
    seen_at_ms BIGINT NOT NULL,
    PRIMARY KEY (forge, comment_id)
);
