package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
)

func TestConfigStatusRoles(t *testing.T) {
	tests := []struct {
		name        string
		publicReads bool
		client      func(*fixture) *Client
		wantRead    drover.Kind // -1: allowed
		wantReload  drover.Kind
	}{
		{"admin", false, func(f *fixture) *Client { return f.admin }, -1, -1},
		{"operator", false, func(f *fixture) *Client { return f.op }, -1, drover.Unauthorized},
		{"reader", false, func(f *fixture) *Client { return f.reader }, -1, drover.Unauthorized},
		{"anonymous", false, func(f *fixture) *Client { return f.anon }, drover.Unauthorized, drover.Unauthorized},
		{"anonymous with public reads", true, func(f *fixture) *Client { return f.anon }, -1, drover.Unauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Options{PublicReads: tt.publicReads})
			ctx := context.Background()
			c := tt.client(f)

			st, err := c.ConfigStatus(ctx)
			switch {
			case tt.wantRead == -1 && err != nil:
				t.Fatalf("ConfigStatus: %v", err)
			case tt.wantRead != -1 && drover.KindOf(err) != tt.wantRead:
				t.Fatalf("ConfigStatus error %v (kind %v), want kind %v", err, drover.KindOf(err), tt.wantRead)
			case tt.wantRead == -1 && (st.Hash != "1111aaaa2222bbbb3333cccc4444dddd" || st.Builders != 2 || st.Path != "/etc/drover/master.star"):
				t.Errorf("ConfigStatus = %+v, want the test config with 2 builders", st)
			}

			_, err = c.Reload(ctx)
			if tt.wantReload == -1 {
				if err != nil {
					t.Fatalf("Reload: %v", err)
				}
				return
			}
			if drover.KindOf(err) != tt.wantReload {
				t.Fatalf("Reload error %v (kind %v), want kind %v", err, drover.KindOf(err), tt.wantReload)
			}
			// A refused caller changed nothing.
			if got := f.b.ConfigStatus(); got.Hash != "1111aaaa2222bbbb3333cccc4444dddd" || got.LastError != "" {
				t.Errorf("after a refused caller the status is %+v", got)
			}
		})
	}
}

func TestReloadSwapsConfig(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	sub := f.b.Events()
	t.Cleanup(sub.Close)
	before, err := f.reader.ConfigStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}

	st, err := f.admin.Reload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Hash != "5555eeee6666ffff7777aaaa8888bbbb" || st.Builders != 1 || st.LastError != "" {
		t.Errorf("Reload returned %+v, want the new hash with 1 builder and no error", st)
	}
	if !st.LoadedAt.After(before.LoadedAt) {
		t.Errorf("loaded_at %v is not after the previous %v", st.LoadedAt, before.LoadedAt)
	}
	if st.Path != before.Path {
		t.Errorf("path changed from %q to %q", before.Path, st.Path)
	}
	select {
	case ev := <-sub.C:
		if ev.Type != events.ConfigLoaded {
			t.Errorf("event %+v, want %s", ev, events.ConfigLoaded)
		}
	default:
		t.Error("reload published no event")
	}
	// The builders endpoint follows the config in force.
	bs, err := f.reader.Builders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 1 || bs[0].Name != "linux-gcc" {
		t.Errorf("builders after reload: %+v, want only linux-gcc", bs)
	}
	if got := f.log.String(); !strings.Contains(got, "config reloaded") || !strings.Contains(got, `by="admin ad0000000001"`) {
		t.Errorf("reload not logged with the admin's token id:\n%s", got)
	}
}

func TestReloadRefused(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	loadErr := errors.New("master.star:12:5: builder \"x\": unknown step kind \"shel\"")
	f.b.setNextConfig(testConfig{err: loadErr})

	// The raw answer: 400 with the file:line message in the JSON error.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.srv.URL+"/api/v1/config/reload", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body errorBody
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decode error body: %v", err)
	}
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status %d, want 400", resp.StatusCode)
	}
	if !strings.Contains(body.Error, "master.star:12:5") || !strings.Contains(body.Error, "config refused") {
		t.Errorf("error %q, want the refusal with master.star:12:5", body.Error)
	}

	// Through the client: Invalid, with the same text.
	_, err = f.admin.Reload(ctx)
	if drover.KindOf(err) != drover.Invalid || !strings.Contains(err.Error(), "master.star:12:5") {
		t.Errorf("client Reload error %v (kind %v), want invalid with master.star:12:5", err, drover.KindOf(err))
	}

	// The old config stays, and the status shows the refusal.
	st, err := f.reader.ConfigStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Hash != "1111aaaa2222bbbb3333cccc4444dddd" || st.Builders != 2 {
		t.Errorf("status after refusal %+v, want the old config in force", st)
	}
	if st.LastError != loadErr.Error() || st.ErrorAt.IsZero() {
		t.Errorf("last_error %q at %v, want %q with a time", st.LastError, st.ErrorAt, loadErr)
	}

	// A good load clears the error.
	f.b.setNextConfig(testConfig{hash: "9999", builders: testBuilders(t)})
	st, err = f.admin.Reload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Hash != "9999" || st.LastError != "" || !st.ErrorAt.IsZero() {
		t.Errorf("status after a good reload %+v, want hash 9999 and no error", st)
	}
}

func TestConfigStatusJSON(t *testing.T) {
	f := newFixture(t, Options{})
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, f.srv.URL+"/api/v1/config", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+readerToken)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"path", "hash", "loaded_at", "builders"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("GET /api/v1/config lacks %q: %v", k, raw)
		}
	}
	for _, k := range []string{"last_error", "error_at"} {
		if _, ok := raw[k]; ok {
			t.Errorf("GET /api/v1/config has %q without a refused load: %v", k, raw)
		}
	}
}
