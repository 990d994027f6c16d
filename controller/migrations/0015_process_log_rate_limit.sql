-- Per-process log rate limit (issue 9): bytes per second an instance may log, -1 for
-- no limit of its own (the cell's default still applies), as CF's
-- `log_rate_limit_in_bytes_per_second`.

ALTER TABLE processes ADD COLUMN log_rate_limit_in_bytes_per_second BIGINT NOT NULL DEFAULT -1;
