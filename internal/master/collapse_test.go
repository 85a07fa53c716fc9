package master

import (
	"reflect"
	"testing"
	"time"

	"github.com/drover-ci/drover"
)

func TestCollapsible(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	builders := map[string]*drover.Builder{
		"c":  {Name: "c", Collapse: true},
		"nc": {Name: "nc"},
	}
	req := func(id int64, builder, branch string, at int, changes bool) drover.BuildRequest {
		r := drover.BuildRequest{ID: id, Builder: builder, Source: drover.SourceStamp{Repository: "r", Branch: branch}, Submitted: t0.Add(time.Duration(at) * time.Second)}
		if changes {
			r.ChangeIDs = []int64{id}
		}
		return r
	}
	pending := []drover.BuildRequest{
		req(1, "c", "main", 1, true),
		req(2, "c", "main", 2, true),
		req(3, "c", "main", 3, true),  // newest on main: wins
		req(4, "c", "dev", 1, true),   // another branch
		req(5, "c", "main", 4, false), // forced: never collapses
		req(6, "nc", "main", 1, true), // builder does not collapse
		req(7, "nc", "main", 2, true),
	}
	got := collapsible(pending, builders)
	want := map[int64]int64{1: 3, 2: 3}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("collapsible = %v, want %v", got, want)
	}
}
