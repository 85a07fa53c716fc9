package master

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/drover-ci/drover"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

func TestStepResult(t *testing.T) {
	spec := &drover.StepSpec{DecodeRC: map[int]drover.Result{5: drover.Warnings, 0: drover.Success}}
	tests := []struct {
		f    *pb.Finished
		want drover.Result
	}{
		{&pb.Finished{ExitCode: 0}, drover.Success},
		{&pb.Finished{ExitCode: 5}, drover.Warnings},
		{&pb.Finished{ExitCode: 2}, drover.Failure},
		{&pb.Finished{ExitCode: -1}, drover.Failure},
		{&pb.Finished{Reason: pb.FinishReason_FINISH_REASON_NO_OUTPUT_TIMEOUT, Error: "no output for 1s"}, drover.Failure},
		{&pb.Finished{Reason: pb.FinishReason_FINISH_REASON_CANCELLED}, drover.Cancelled},
		{&pb.Finished{Reason: pb.FinishReason_FINISH_REASON_START_FAILED}, drover.Exception},
	}
	for _, tt := range tests {
		if got, _ := stepResult(spec, tt.f); got != tt.want {
			t.Errorf("stepResult(%v) = %s, want %s", tt.f, got, tt.want)
		}
	}
}

func TestApplyStep(t *testing.T) {
	flunkHalt := &drover.StepSpec{FlunkOnFailure: true, HaltOnFailure: true}
	warnOnly := &drover.StepSpec{WarnOnFailure: true}
	tests := []struct {
		name     string
		build    drover.Result
		spec     *drover.StepSpec
		step     drover.Result
		want     drover.Result
		wantHalt bool
	}{
		{"success keeps", drover.Success, flunkHalt, drover.Success, drover.Success, false},
		{"failure flunks and halts", drover.Success, flunkHalt, drover.Failure, drover.Failure, true},
		{"warn on failure", drover.Success, warnOnly, drover.Failure, drover.Warnings, false},
		{"warnings", drover.Success, flunkHalt, drover.Warnings, drover.Warnings, false},
		{"exception halts", drover.Warnings, warnOnly, drover.Exception, drover.Exception, true},
		{"worst kept", drover.Failure, warnOnly, drover.Warnings, drover.Failure, false},
	}
	for _, tt := range tests {
		got, halt := applyStep(tt.build, tt.spec, tt.step)
		if got != tt.want || halt != tt.wantHalt {
			t.Errorf("%s: got %s/%v, want %s/%v", tt.name, got, halt, tt.want, tt.wantHalt)
		}
	}
}

func TestExtractProperties(t *testing.T) {
	out := []byte("fetching\nabc Someone: msg\ngot_revision=0123456789abcdef0123456789abcdef01234567\nVERSION=1.2.3\n")
	props := extractProperties(&drover.StepSpec{Kind: drover.StepCheckout, Extract: map[string]string{"version": `^VERSION=(.*)$`}}, out)
	if props["got_revision"] != "0123456789abcdef0123456789abcdef01234567" || props["version"] != "1.2.3" {
		t.Errorf("props = %v", props)
	}
	props = extractProperties(&drover.StepSpec{SetProperty: "all"}, []byte("  v1 \n"))
	if props["all"] != "v1" {
		t.Errorf("set_property = %q", props["all"])
	}
}

// A worker of protocol 9 or later gets the checkout as a Checkout it does
// itself with git; an older one the shell script.
func TestCommandForCheckout(t *testing.T) {
	src := &drover.GitSource{Name: "proj", URL: "https://example.org/proj.git", Branches: []string{"main"}}
	spec := &drover.StepSpec{Kind: drover.StepCheckout, Name: "checkout", Source: src, Mode: "full", Method: "clean",
		Depth: 1, Filter: "blob:none", Submodules: true, RecloneOnFailure: true}
	b := &drover.Build{ID: 7, Builder: "b", Source: drover.SourceStamp{Repository: src.URL, Branch: "dev", Revision: "abc123"}}

	run := commandFor("c", b, &drover.Builder{Name: "b"}, spec, 0, nil, drover.Facts{"os": {"windows"}}, checkoutProtocol)
	want := &pb.Checkout{Source: "proj", Url: src.URL, Branch: "dev", Revision: "abc123", Mode: "full", Method: "clean",
		Depth: 1, Filter: "blob:none", Submodules: true, RecloneOnFailure: true}
	if !proto.Equal(run.GetCheckout(), want) || len(run.GetArgv()) != 0 {
		t.Errorf("protocol %d: checkout = %v, argv %q; want %v and no argv", checkoutProtocol, run.GetCheckout(), run.GetArgv(), want)
	}
	if h := logHeader(run, spec, "w1"); !strings.Contains(h, "filter blob:none") || !strings.Contains(h, "by the worker") {
		t.Errorf("log header = %q", h)
	}

	run = commandFor("c", b, &drover.Builder{Name: "b"}, spec, 0, nil, nil, checkoutProtocol-1)
	if run.GetCheckout() != nil || len(run.GetArgv()) != 3 || run.GetArgv()[0] != "sh" || run.Env["DROVER_GIT_BRANCH"] != "dev" {
		t.Errorf("protocol %d: checkout = %v, argv %q, env %v; want the shell script", checkoutProtocol-1, run.GetCheckout(), run.GetArgv(), run.Env)
	}

	// Another repository's build checks this source out at its first branch.
	other := &drover.Build{Source: drover.SourceStamp{Repository: "https://example.org/other.git", Branch: "x", Revision: "def"}}
	if br, rev := checkoutTarget(other, src); br != "main" || rev != "" {
		t.Errorf("checkoutTarget of another repository's build = %q, %q", br, rev)
	}
}

// A checkout that could not fetch from its source is infra, retried,
// and names the source; one that found no such revision fails, saying so.
func TestStepResultCheckout(t *testing.T) {
	spec := &drover.StepSpec{Kind: drover.StepCheckout, Source: &drover.GitSource{Name: "proj", URL: "https://example.org/proj.git"}}
	r, sum := stepResult(spec, &pb.Finished{ExitCode: -1, Reason: pb.FinishReason_FINISH_REASON_SOURCE_FAILED, Error: "clone: connection refused"})
	if r != drover.Retry || !r.IsInfra() || !strings.Contains(sum, "source proj (https://example.org/proj.git)") || !strings.Contains(sum, "connection refused") {
		t.Errorf("source failure = %s, %q", r, sum)
	}
	r, sum = stepResult(spec, &pb.Finished{ExitCode: 1, Error: `no branch "nope" at https://example.org/proj.git`})
	if r != drover.Failure || !strings.Contains(sum, `no branch "nope"`) {
		t.Errorf("missing branch = %s, %q", r, sum)
	}
	r, _ = stepResult(spec, &pb.Finished{ExitCode: -1, Reason: pb.FinishReason_FINISH_REASON_START_FAILED, Error: "corrupt"})
	if r != drover.Exception {
		t.Errorf("worker failure = %s, want exception", r)
	}
}
