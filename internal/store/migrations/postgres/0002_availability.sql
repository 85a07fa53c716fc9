-- Why a worker is at its availability, and an operator's override of it.
ALTER TABLE workers
	ADD COLUMN availability_reason   TEXT NOT NULL DEFAULT '',
	ADD COLUMN override_availability TEXT NOT NULL DEFAULT '',
	ADD COLUMN override_reason       TEXT NOT NULL DEFAULT '',
	ADD COLUMN override_by           TEXT NOT NULL DEFAULT '',
	ADD COLUMN override_at           BIGINT;
