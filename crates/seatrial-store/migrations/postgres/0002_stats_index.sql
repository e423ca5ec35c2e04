-- Counting runs by state and mode (metrics, queue depth) reads this index alone.
CREATE INDEX runs_state_mode ON runs (state, mode);
