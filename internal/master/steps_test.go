package master

import (
	"testing"

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
