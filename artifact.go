package drover

import "time"

// Artifact is one file a build uploaded to the master (an upload step).
// Its bytes are kept in the master's artifact directory, under
// <build id>/<Path>; the store holds this index entry.
type Artifact struct {
	ID      int64 `json:"id"`
	BuildID int64 `json:"build_id"`
	// StepIndex is the upload step that stored it.
	StepIndex int `json:"step"`
	// Path is the slash-separated path relative to the build's artifact
	// root: the step's destination joined with the file's path.
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	SHA256  string    `json:"sha256"` // lowercase hex
	Created time.Time `json:"created"`
}
