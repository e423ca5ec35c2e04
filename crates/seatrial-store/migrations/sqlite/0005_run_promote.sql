-- A run that promotes: a cold trial of a recipe's latest release which, when it passes, keeps its
-- data as the recipe's warm canonical (the nightly cold sweep queues these). Stored with the run,
-- so a run re-queued after its server died still promotes.
ALTER TABLE runs ADD COLUMN promote BOOLEAN NOT NULL DEFAULT FALSE;
