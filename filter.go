package drover

// The filters below select what the store lists; readers outside the
// store (the API, the web UI) use them with the narrow interfaces they
// declare.

// ChangeFilter selects changes. Zero fields select everything.
type ChangeFilter struct {
	Limit int // 0: a default of 100
}

// RequestFilter selects build requests. Zero fields select everything.
type RequestFilter struct {
	State   RequestState
	Builder string
	Limit   int // 0: no limit
}

// BuildFilter selects builds. Zero fields select everything.
type BuildFilter struct {
	Builder   string
	Worker    string
	State     BuildState
	RequestID int64
	// Master selects the builds a master drives (see AdoptBuild).
	Master string
	// BeforeID, when set, returns only builds with a smaller ID (paging).
	BeforeID int64
	Limit    int // 0: a default of 100
}

// The approval states of a worker (drover.Worker.Approval).
const (
	// ApprovalApproved lets the worker connect: the default, and the state
	// of every worker enrolled while the master does not require approval.
	ApprovalApproved = "approved"
	// ApprovalPending holds a worker enrolled under approve_workers until
	// an admin decides.
	ApprovalPending = "pending"
	// ApprovalRejected keeps a worker out for good (until approved).
	ApprovalRejected = "rejected"
)

// ParseApproval checks the name of an approval state; "" is approved, as
// a worker row written before approval existed is.
func ParseApproval(s string) (string, error) {
	switch s {
	case "", ApprovalApproved:
		return ApprovalApproved, nil
	case ApprovalPending, ApprovalRejected:
		return s, nil
	}
	return "", Errorf(Invalid, "unknown approval %q (want approved, pending or rejected)", s)
}
