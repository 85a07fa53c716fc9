-- Drover's first schema.
--
-- Times are INTEGER nanoseconds since the Unix epoch (UTC); NULL is "not
-- yet" (the zero time.Time). Maps and lists are JSON text. IDs use
-- AUTOINCREMENT so that an ID is never reused after its row is deleted:
-- log files on disk are named by log ID, and links name builds by ID.

CREATE TABLE changes (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	repository TEXT    NOT NULL DEFAULT '',
	branch     TEXT    NOT NULL DEFAULT '',
	revision   TEXT    NOT NULL DEFAULT '',
	author     TEXT    NOT NULL DEFAULT '',
	comments   TEXT    NOT NULL DEFAULT '',
	files      TEXT    NOT NULL DEFAULT '[]',
	category   TEXT    NOT NULL DEFAULT '',
	properties TEXT    NOT NULL DEFAULT '{}',
	at         INTEGER NOT NULL
);

CREATE TABLE build_requests (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	builder       TEXT    NOT NULL,
	repository    TEXT    NOT NULL DEFAULT '',
	branch        TEXT    NOT NULL DEFAULT '',
	revision      TEXT    NOT NULL DEFAULT '',
	properties    TEXT    NOT NULL DEFAULT '{}',
	priority      INTEGER NOT NULL DEFAULT 0,
	reason        TEXT    NOT NULL DEFAULT '',
	change_ids    TEXT    NOT NULL DEFAULT '[]',
	state         TEXT    NOT NULL CHECK (state IN ('pending', 'claimed', 'finished', 'cancelled')),
	result        TEXT    NOT NULL DEFAULT '',
	submitted     INTEGER NOT NULL,
	tries         INTEGER NOT NULL DEFAULT 0,
	-- Why a pending request was cancelled; kept for the record although
	-- drover.BuildRequest has no field for it yet.
	cancel_reason TEXT    NOT NULL DEFAULT ''
);

-- The queue: pending requests in dispatch order.
CREATE INDEX build_requests_queue ON build_requests (state, priority DESC, submitted, id);
CREATE INDEX build_requests_builder ON build_requests (builder, state);

CREATE TABLE builds (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	builder    TEXT    NOT NULL,
	number     INTEGER NOT NULL,
	request_id INTEGER NOT NULL REFERENCES build_requests (id),
	worker     TEXT    NOT NULL DEFAULT '',
	repository TEXT    NOT NULL DEFAULT '',
	branch     TEXT    NOT NULL DEFAULT '',
	revision   TEXT    NOT NULL DEFAULT '',
	properties TEXT    NOT NULL DEFAULT '{}',
	reason     TEXT    NOT NULL DEFAULT '',
	why_worker TEXT    NOT NULL DEFAULT '',
	state      TEXT    NOT NULL CHECK (state IN ('running', 'finished')),
	result     TEXT    NOT NULL DEFAULT '',
	summary    TEXT    NOT NULL DEFAULT '',
	started    INTEGER NOT NULL,
	finished   INTEGER,
	-- Also the index for "builder's builds by number" and for allocating
	-- the next number.
	UNIQUE (builder, number)
);

CREATE INDEX builds_worker ON builds (worker, id);
CREATE INDEX builds_request ON builds (request_id);
-- For the log janitor: builds that finished before a horizon.
CREATE INDEX builds_finished ON builds (finished);

CREATE TABLE steps (
	build_id  INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
	idx       INTEGER NOT NULL,
	name      TEXT    NOT NULL DEFAULT '',
	state     TEXT    NOT NULL,
	result    TEXT    NOT NULL DEFAULT '',
	summary   TEXT    NOT NULL DEFAULT '',
	exit_code INTEGER,
	started   INTEGER,
	finished  INTEGER,
	PRIMARY KEY (build_id, idx)
);

CREATE TABLE logs (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	build_id INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
	step     INTEGER NOT NULL,
	name     TEXT    NOT NULL,
	bytes    INTEGER NOT NULL DEFAULT 0,
	dropped  INTEGER NOT NULL DEFAULT 0,
	complete BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE INDEX logs_build ON logs (build_id, step, id);

CREATE TABLE workers (
	name         TEXT    PRIMARY KEY,
	facts        TEXT    NOT NULL DEFAULT '{}',
	labels       TEXT    NOT NULL DEFAULT '{}',
	version      TEXT    NOT NULL DEFAULT '',
	os           TEXT    NOT NULL DEFAULT '',
	arch         TEXT    NOT NULL DEFAULT '',
	availability TEXT    NOT NULL DEFAULT 'eager',
	connected    BOOLEAN NOT NULL DEFAULT FALSE,
	first_seen   INTEGER NOT NULL,
	last_seen    INTEGER,
	connected_at INTEGER,
	address      TEXT    NOT NULL DEFAULT ''
);

CREATE TABLE tokens (
	id        TEXT    PRIMARY KEY,
	kind      TEXT    NOT NULL CHECK (kind IN ('api', 'enroll', 'worker')),
	hash      TEXT    NOT NULL,
	role      TEXT    NOT NULL DEFAULT '',
	worker    TEXT    NOT NULL DEFAULT '',
	comment   TEXT    NOT NULL DEFAULT '',
	created   INTEGER NOT NULL,
	expires   INTEGER,
	uses_left INTEGER NOT NULL DEFAULT -1,
	last_used INTEGER,
	revoked   BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE INDEX tokens_kind ON tokens (kind, created);
