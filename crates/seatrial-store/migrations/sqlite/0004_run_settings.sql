-- A queued run carries what decides how it runs, fixed when it was queued, so every server that
-- claims it runs it the same way whatever its own config says: the recipe's directory inside the
-- repository, and the probe settings (JSON, written and read by the server). The commit is
-- `commit_sha`/`reference`, the time limit `timeout_secs`.
ALTER TABLE runs ADD COLUMN recipe_path TEXT;
ALTER TABLE runs ADD COLUMN probe TEXT;
