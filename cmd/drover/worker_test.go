package main

import (
	"strings"
	"testing"
)

func TestParseWindows(t *testing.T) {
	ws, err := parseWindows([]string{"Mon-Fri 09:00-17:00", "Sat,Sun 10:00-12:00 Europe/Berlin", "22:00-06:00"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range ws {
		got = append(got, w.String())
	}
	if want := "Mon-Fri 09:00-17:00|Sat,Sun 10:00-12:00 Europe/Berlin|22:00-06:00"; strings.Join(got, "|") != want {
		t.Errorf("parseWindows = %q, want %q", got, want)
	}
	if ws, err := parseWindows([]string{" Always "}); err != nil || ws != nil {
		t.Errorf("parseWindows(always) = %v, %v; want none", ws, err)
	}
	_, err = parseWindows([]string{"09:00-17:00", "Mon-Fxi 09:00-17:00"})
	if err == nil || !strings.Contains(err.Error(), `--available: time window "Mon-Fxi 09:00-17:00": at column 5: "Fxi" is not a day of the week`) ||
		!strings.Contains(err.Error(), "want [DAYS] HH:MM-HH:MM [ZONE]") {
		t.Errorf("parseWindows(bad) = %v", err)
	}
}
