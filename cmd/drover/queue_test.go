package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
)

// fakeMaster answers the API calls of the queue commands with fixed data
// and records availability calls, speaking the API's JSON.
type fakeMaster struct {
	mu    sync.Mutex
	calls []string // "name state reason auth" of availability calls
}

func (f *fakeMaster) handler(t *testing.T) http.Handler {
	now := time.Now().UTC()
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if err := json.NewEncoder(w).Encode(v); err != nil {
			t.Error(err)
		}
	}
	mux.HandleFunc("GET /api/v1/queue", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, []drover.QueueEntry{
			{Request: drover.BuildRequest{ID: 7, Builder: "linux-gcc", Priority: 10, Submitted: now.Add(-5 * time.Minute),
				Source: drover.SourceStamp{Branch: "main", Revision: "0123456789abcdef"}}, Waiting: "lock vm held by build 12"},
			{Request: drover.BuildRequest{ID: 8, Builder: "docs", Submitted: now.Add(-3 * time.Hour)},
				Waiting: "no eligible worker online", NoWorkerSince: now.Add(-2 * time.Hour)},
		})
	})
	mux.HandleFunc("GET /api/v1/locks", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, []drover.LockState{
			{Name: "vm", Scope: drover.LockMaster, Max: 2,
				Holders: []drover.LockHolder{{BuildID: 12, Step: -1, Exclusive: true}},
				Waiters: []drover.LockHolder{{RequestID: 7, Builder: "linux-gcc", Step: -1}}},
			{Name: "gpu", Scope: drover.LockWorker, Worker: "deb1", Max: 1},
		})
	})
	mux.HandleFunc("GET /api/v1/workers", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, []drover.Worker{
			{Name: "deb1", Connected: true, OS: "linux", Arch: "amd64", Version: "0.3.0", Availability: drover.Eager,
				Override: &drover.AvailabilityOverride{Availability: drover.Draining, Reason: "disk swap", By: "operator 0e01"}},
			{Name: "mac1", Availability: drover.Reluctant, AvailabilityReason: "outside 22:00-06:00"},
			{Name: "lab1", Connected: true, Availability: drover.Eager,
				Downtime: &drover.Downtime{Source: "config", Window: "Wed 08:00-10:00 Europe/Berlin", Reason: "Wed 08:00-10:00 Europe/Berlin until 10:00"}},
			{Name: "lab2", Connected: true, Availability: drover.Offline, AvailabilityReason: "outside Mon-Fri 09:00-17:00 until Mon 09:00",
				Override: &drover.AvailabilityOverride{Availability: drover.Eager, By: "operator 0e01"},
				Downtime: &drover.Downtime{Source: "config", Window: "Sat,Sun 00:00-24:00 UTC", Reason: "Sat,Sun 00:00-24:00 UTC until Mon 00:00"}},
		})
	})
	mux.HandleFunc("GET /api/v1/masters", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.SiteStatus{This: "ci1-0a", Masters: []api.MasterStatus{
			{Master: drover.Master{ID: "ci1-0a", URL: "https://ci1.example.org/", WorkersAddr: ":9989", Version: "0.3.0", Heartbeat: now}, Alive: true},
			{Master: drover.Master{ID: "ci2-0b", WorkersAddr: ":9989", Version: "0.3.0", Heartbeat: now.Add(-3 * time.Hour)}},
		}})
	})
	mux.HandleFunc("POST /api/v1/workers/{name}/availability", func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Availability, Reason string }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Error(err)
		}
		f.mu.Lock()
		f.calls = append(f.calls, strings.Join([]string{r.PathValue("name"), body.Availability, body.Reason, r.Header.Get("Authorization")}, " "))
		f.mu.Unlock()
		wk := drover.Worker{Name: r.PathValue("name"), Availability: drover.Eager}
		if body.Availability != "auto" {
			wk.Override = &drover.AvailabilityOverride{Availability: drover.Availability(body.Availability), Reason: body.Reason, By: "operator 0e01"}
		}
		reply(w, 200, wk)
	})
	return mux
}

func TestQueueCommands(t *testing.T) {
	fm := &fakeMaster{}
	srv := httptest.NewServer(fm.handler(t))
	t.Cleanup(srv.Close)
	t.Setenv("DROVER_TOKEN", "")
	t.Setenv("DROVER_MASTER", "")

	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"queue", []string{"queue"}, []string{
			"REQUEST  BUILDER    PRIORITY  AGE  SOURCE           WAITING",
			"7        linux-gcc  10        5m   main@0123456789  lock vm held by build 12",
			"8        docs       0         3h   default          no eligible worker online (no eligible worker for 2h)",
		}},
		{"locks", []string{"locks"}, []string{
			"vm    master       2/2   build 12 (exclusive)  request 7",
			"gpu   worker deb1  0/1   -                     -",
		}},
		{"workers", []string{"workers"}, []string{
			"deb1    yes        draining      operator 0e01: disk swap (worker's own: eager)                                                         linux/amd64  0.3.0",
			"mac1    no         reluctant     worker: outside 22:00-06:00                                                                            -            -",
			"lab1    yes        offline       downtime (config): Wed 08:00-10:00 Europe/Berlin until 10:00 (worker's own: eager)                     -            -",
			"lab2    yes        offline       downtime (config): Sat,Sun 00:00-24:00 UTC until Mon 00:00 (operator's: eager; worker's own: offline)  -            -",
		}},
		{"masters", []string{"masters"}, []string{
			"MASTER         STATE  HEARTBEAT  WEB                       WORKERS  VERSION",
			"ci1-0a (this)  alive  0s ago     https://ci1.example.org/  :9989    0.3.0",
			"ci2-0b         dead   3h ago     -                         :9989    0.3.0",
		}},
		{"availability", []string{"availability", "deb1", "offline", "--reason", "moving racks", "--api-token", "drover_api_0e01_s"}, []string{
			"worker deb1: offline, set by operator 0e01: moving racks",
		}},
		{"availability auto", []string{"availability", "deb1", "AUTO", "--api-token", "drover_api_0e01_s"}, []string{
			"worker deb1: eager, set by worker",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append(tt.args, "--master", srv.URL)
			if err := run(context.Background(), args, &stdout, &stderr); err != nil {
				t.Fatalf("drover %s: %v\n%s", strings.Join(tt.args, " "), err, stderr.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, stdout.String())
				}
			}
		})
	}
	fm.mu.Lock()
	defer fm.mu.Unlock()
	want := []string{"deb1 offline moving racks Bearer drover_api_0e01_s", "deb1 auto  Bearer drover_api_0e01_s"}
	if strings.Join(fm.calls, "|") != strings.Join(want, "|") {
		t.Errorf("availability calls = %q, want %q", fm.calls, want)
	}
}

func TestAvailabilityCommandRefusesBadState(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"availability", "deb1", "asleep", "--master", "http://127.0.0.1:1"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), `unknown availability "asleep"`) || !strings.Contains(err.Error(), "auto") {
		t.Errorf("bad state: %v, want an error naming the state and auto", err)
	}
}
