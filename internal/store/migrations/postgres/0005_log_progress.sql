-- How far a log's output is stored: its durable size in bytes and the
-- sequence number of the last output chunk in it, so that a restarted
-- master re-attaching a running command knows exactly what to skip.
ALTER TABLE logs ADD COLUMN seq       BIGINT NOT NULL DEFAULT 0;
ALTER TABLE logs ADD COLUMN seq_bytes BIGINT NOT NULL DEFAULT 0;
