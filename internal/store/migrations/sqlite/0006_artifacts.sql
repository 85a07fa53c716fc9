-- Files builds uploaded to the master (upload steps). The bytes live in
-- the master's artifact directory; this is their index, one row per file,
-- expired by the janitor past the artifact horizon.
CREATE TABLE artifacts (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	build_id INTEGER NOT NULL REFERENCES builds (id),
	step     INTEGER NOT NULL,
	path     TEXT    NOT NULL,
	size     INTEGER NOT NULL,
	sha256   TEXT    NOT NULL,
	created  INTEGER NOT NULL,
	UNIQUE (build_id, path)
);
CREATE INDEX artifacts_created ON artifacts (created);
