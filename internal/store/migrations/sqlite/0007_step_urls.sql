-- The links a step published (JSON object of name to URL): from its
-- definition, interpolated when it started, and from its running command.
ALTER TABLE steps ADD COLUMN urls TEXT NOT NULL DEFAULT '';
