package web

import (
	"net/url"
	"sort"
)

// stepLink is one link of a step as the build page shows it.
type stepLink struct {
	Name string
	URL  string
	// Linkable is set for absolute http and https URLs only; the page
	// shows any other (javascript:, data:, relative) as text, since a
	// build's command chose it.
	Linkable bool
}

// stepLinks orders a step's links by name for the page.
func stepLinks(urls map[string]string) []stepLink {
	out := make([]stepLink, 0, len(urls))
	for name, raw := range urls {
		out = append(out, stepLink{Name: name, URL: raw, Linkable: isWebURL(raw)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func isWebURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
