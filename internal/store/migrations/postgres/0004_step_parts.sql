-- The parts of a sharded step (JSON list of drover.StepPart).
ALTER TABLE steps ADD COLUMN parts TEXT NOT NULL DEFAULT '';
