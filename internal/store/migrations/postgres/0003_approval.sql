-- An admin's approval of a worker, for masters that hold enrolled workers
-- until approved. Existing workers were let in without it: approved.
ALTER TABLE workers
	ADD COLUMN approval    TEXT NOT NULL DEFAULT 'approved'
		CHECK (approval IN ('approved', 'pending', 'rejected')),
	ADD COLUMN approval_by TEXT NOT NULL DEFAULT '',
	ADD COLUMN approval_at BIGINT;
