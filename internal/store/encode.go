package store

import (
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"time"

	"github.com/drover-ci/drover"
)

// Times are stored as INTEGER nanoseconds since the Unix epoch, UTC: they
// sort and compare in SQL, mean the same on every engine, and keep full
// precision. The zero time is stored as NULL and read back as time.Time{}.

// minTime and maxTime bound what int64 nanoseconds can hold.
var (
	minTime = time.Unix(0, -1<<63).UTC()
	maxTime = time.Unix(0, 1<<63-1).UTC()
)

// dbTime is a time.Time as a query argument or a scan destination.
type dbTime time.Time

// Value implements driver.Valuer.
func (t dbTime) Value() (driver.Value, error) {
	tt := time.Time(t)
	if tt.IsZero() {
		return nil, nil
	}
	if tt.Before(minTime) || tt.After(maxTime) {
		return nil, drover.Errorf(drover.Invalid, "time %s is outside the years 1678-2262 the store can hold", tt.UTC().Format(time.RFC3339))
	}
	return tt.UnixNano(), nil
}

// Scan implements sql.Scanner.
func (t *dbTime) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*t = dbTime{}
	case int64:
		*t = dbTime(time.Unix(0, v).UTC())
	default:
		return fmt.Errorf("scan time: unexpected %T", src)
	}
	return nil
}

// jsonText stores a Go value (a map or a slice) as JSON text. An empty
// value is stored as its empty JSON form and read back as nil, so that
// values round-trip the way their omitempty JSON tags present them.
type jsonText struct{ v any }

// Value implements driver.Valuer.
func (j jsonText) Value() (driver.Value, error) {
	b, err := json.Marshal(j.v)
	if err != nil {
		return nil, fmt.Errorf("encode json column: %w", err)
	}
	return string(b), nil
}

// scanJSON is a scan destination that decodes JSON text into dst, a
// pointer to a map or a slice.
type scanJSON struct{ dst any }

// Scan implements sql.Scanner.
func (j scanJSON) Scan(src any) error {
	var b []byte
	switch v := src.(type) {
	case nil:
		return nil
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		return fmt.Errorf("scan json column: unexpected %T", src)
	}
	switch string(b) {
	case "", "null", "{}", "[]":
		return nil // leave dst nil
	}
	if err := json.Unmarshal(b, j.dst); err != nil {
		return fmt.Errorf("decode json column: %w", err)
	}
	return nil
}

// jsonMap and jsonSlice store a nil map or slice as its empty JSON form
// rather than null, so the column always holds a value of the right shape.
func jsonMap[M ~map[K]V, K comparable, V any](m M) jsonText {
	if m == nil {
		return jsonText{map[K]V{}}
	}
	return jsonText{m}
}

func jsonSlice[S ~[]E, E any](s S) jsonText {
	if s == nil {
		return jsonText{[]E{}}
	}
	return jsonText{s}
}

// orNow returns t, or now when t is zero: the store fills in times its
// callers leave out, as the Store contract promises for Submitted.
func orNow(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now().UTC()
	}
	return t.UTC()
}
