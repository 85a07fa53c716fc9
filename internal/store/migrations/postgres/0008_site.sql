-- A site: several masters sharing one database. Each master records
-- itself and beats a heartbeat in masters; a master whose heartbeat is
-- too old is dead, and another adopts the running builds it drove, which
-- builds.master names. workers.master names the master a worker is (or
-- was last) connected to, so that a master starting marks only its own
-- workers disconnected. Rows from before sites have master '', which
-- no master's ID is.
CREATE TABLE masters (
	id           TEXT   PRIMARY KEY,
	url          TEXT   NOT NULL DEFAULT '',
	workers_addr TEXT   NOT NULL DEFAULT '',
	version      TEXT   NOT NULL DEFAULT '',
	started      BIGINT NOT NULL,
	heartbeat    BIGINT NOT NULL
);

ALTER TABLE builds ADD COLUMN master TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN master TEXT NOT NULL DEFAULT '';

-- For finding a dead master's running builds.
CREATE INDEX builds_state ON builds (state, master);
