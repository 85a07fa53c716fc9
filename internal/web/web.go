// Package web serves Drover's human interface: server-rendered HTML pages
// (home, waterfall, classes, builders, builder, build, workers, worker,
// changes, queue, locks, admin)
// made with html/template from templates and assets embedded in the binary.
//
// Pages are complete without JavaScript. A small script (static/live.js)
// makes them live: it follows running logs over the API's server-sent
// events and, when the master's event stream says something changed,
// re-fetches a named fragment of the same page (?fragment=NAME, or the
// X-Fragment header) and swaps it in. The handler renders a fragment with
// the same template and data as the full page, so the two never disagree.
//
// The package only reads: writes (force, cancel, availability, config
// reload) go through the REST API, which checks credentials. The pages show
// the CLI command to run; the worker page's availability form and the
// admin page's reload button have the script send the caller's token to
// the API itself, so no credential passes through
// here and no cookie can be ridden by another site.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
)

//go:embed templates/*.html static
var content embed.FS

// pageNames lists every page template (templates/NAME.html).
func pageNames() []string {
	return []string{"home", "builders", "builder", "build", "workers", "worker", "changes", "queue", "locks", "waterfall", "classes", "admin", "error"}
}

// pageFragments lists the fragments a page can render alone; fragment F is
// the template "frag-F" of the page. The live script asks only for names
// listed here, and the handler refuses any other.
func pageFragments(page string) []string {
	switch page {
	case "home":
		return []string{"stats", "builds"}
	case "builders":
		return []string{"builders"}
	case "builder":
		return []string{"builds", "requests", "eligibility"}
	case "build":
		return []string{"header", "steps", "props", "locks"}
	case "workers":
		return []string{"workers", "approval"}
	case "worker":
		return []string{"info", "builds"}
	case "changes":
		return []string{"changes"}
	case "queue":
		return []string{"queue"}
	case "locks":
		return []string{"locks"}
	case "waterfall":
		return []string{"waterfall"}
	case "classes":
		return []string{"classes"}
	case "admin":
		return []string{"config"}
	}
	return nil
}

// server is the web UI handler. Its fields are set at construction and
// never change, so it is safe for concurrent use.
type server struct {
	b      api.Backend
	logger *slog.Logger
	now    func() time.Time
	mux    *http.ServeMux
	// tmpl holds one template set per page: the shared layout and partials
	// plus that page's own "content" and fragment definitions.
	tmpl map[string]*template.Template
	// assetVersion is a hash of the embedded assets, put in their URLs so
	// browsers may cache them forever and still see a new release.
	assetVersion string
	static       fs.FS
}

// NewHandler returns the web UI for b, to be mounted at "/". It parses the
// embedded templates once, so a broken template fails here and not on the
// first request. Errors while serving pages are logged to logger.
func NewHandler(b api.Backend, logger *slog.Logger) (http.Handler, error) {
	return newServer(b, logger, time.Now)
}

func newServer(b api.Backend, logger *slog.Logger, now func() time.Time) (*server, error) {
	if b == nil {
		return nil, drover.Errorf(drover.Invalid, "web: nil backend")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	static, err := fs.Sub(content, "static")
	if err != nil {
		return nil, fmt.Errorf("web: static assets: %w", err)
	}
	version, err := hashFS(static)
	if err != nil {
		return nil, fmt.Errorf("web: hash assets: %w", err)
	}
	s := &server{
		b:            b,
		logger:       logger.With("component", "web"),
		now:          now,
		assetVersion: version,
		static:       static,
	}
	if err := s.parseTemplates(); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

func (s *server) parseTemplates() error {
	base, err := template.New("base").Funcs(s.funcs()).ParseFS(content, "templates/layout.html", "templates/partials.html")
	if err != nil {
		return fmt.Errorf("web: parse layout: %w", err)
	}
	s.tmpl = make(map[string]*template.Template)
	for _, name := range pageNames() {
		frags := pageFragments(name)
		t, err := base.Clone()
		if err != nil {
			return fmt.Errorf("web: clone layout for %s: %w", name, err)
		}
		if _, err := t.ParseFS(content, "templates/"+name+".html"); err != nil {
			return fmt.Errorf("web: parse page %s: %w", name, err)
		}
		for _, f := range append([]string{"content"}, frags...) {
			tn := f
			if f != "content" {
				tn = "frag-" + f
			}
			if t.Lookup(tn) == nil {
				return fmt.Errorf("web: page %s does not define template %q", name, tn)
			}
		}
		s.tmpl[name] = t
	}
	return nil
}

func (s *server) routes() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.handleHome)
	mux.HandleFunc("GET /waterfall", s.handleWaterfall)
	mux.HandleFunc("GET /classes", s.handleClasses)
	mux.HandleFunc("GET /builders", s.handleBuilders)
	mux.HandleFunc("GET /builders/{name}", s.handleBuilder)
	mux.HandleFunc("GET /builders/{name}/builds/{number}", s.handleBuildByNumber)
	mux.HandleFunc("GET /builds/{id}", s.handleBuildByID)
	mux.HandleFunc("GET /workers", s.handleWorkers)
	mux.HandleFunc("GET /workers/{name}", s.handleWorker)
	mux.HandleFunc("GET /changes", s.handleChanges)
	mux.HandleFunc("GET /queue", s.handleQueue)
	mux.HandleFunc("GET /requests", s.handleRequests)
	mux.HandleFunc("GET /locks", s.handleLocks)
	mux.HandleFunc("GET /admin", s.handleAdmin)
	mux.HandleFunc("GET /static/{file...}", s.handleStatic)
	// The web UI only reads: any other method gets 405 from the mux.
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, drover.Errorf(drover.NotFound, "no page at %s", r.URL.Path))
	})
	s.mux = mux
}

// ServeHTTP sets headers every response needs, then routes.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Everything the pages load comes from here; nothing inline, nothing
	// framed. This keeps a hostile log line or builder name inert even if
	// an escaping bug slipped through.
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	s.mux.ServeHTTP(w, r)
}

// layoutData is what the layout needs around every page.
type layoutData struct {
	Title     string // the master's title
	PageTitle string
	Nav       string // which nav entry is current
	URL       string // the master's configured URL
	Asset     func(string) string
	Page      any
}

// render writes page name with data, or only the fragment the request asks
// for. It renders into a buffer first so that a template error becomes a
// clean error page instead of half a page.
func (s *server) render(w http.ResponseWriter, r *http.Request, status int, name, nav, title string, data any) {
	t, ok := s.tmpl[name]
	if !ok {
		s.fail(w, r, fmt.Errorf("render: no page template %q", name))
		return
	}
	tn := "layout"
	var exec any = layoutData{
		Title:     s.b.Title(),
		PageTitle: trimTitle(title),
		Nav:       nav,
		URL:       s.b.URL(),
		Asset:     s.asset,
		Page:      data,
	}
	if frag := fragmentName(r); frag != "" {
		if !hasFragment(name, frag) {
			s.fail(w, r, drover.Errorf(drover.NotFound, "page has no fragment %q", frag))
			return
		}
		tn, exec = "frag-"+frag, data
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, tn, exec); err != nil {
		s.logger.Error("render page", "page", name, "template", tn, "path", r.URL.Path, "err", err)
		if name != "error" {
			s.fail(w, r, fmt.Errorf("render %s: %w", name, err))
		} else {
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// Pages show live state; a cached copy would be a lie.
	h.Set("Cache-Control", "no-store")
	h.Add("Vary", "X-Fragment")
	w.WriteHeader(status)
	if _, err := buf.WriteTo(w); err != nil {
		s.logger.Debug("write page", "path", r.URL.Path, "err", err)
	}
}

func fragmentName(r *http.Request) string {
	if f := r.Header.Get("X-Fragment"); f != "" {
		return f
	}
	return r.URL.Query().Get("fragment")
}

func hasFragment(page, frag string) bool {
	for _, f := range pageFragments(page) {
		if f == frag {
			return true
		}
	}
	return false
}

// errorPage is the data of the error page.
type errorPage struct {
	Status  int
	Heading string
	Message string
}

// fail renders the error page for err with the status its kind maps to.
// Internal errors are logged with their details and shown as a generic
// message; the rest are the caller's doing and are logged at debug level.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := api.StatusOf(err)
	if status >= 500 {
		s.logger.Error("page failed", "path", r.URL.Path, "status", status, "err", err)
	} else {
		s.logger.Debug("page refused", "path", r.URL.Path, "status", status, "err", err)
	}
	p := errorPage{Status: status, Heading: http.StatusText(status), Message: drover.Message(err)}
	if status == http.StatusNotFound {
		p.Heading = "Not found"
	}
	if fragmentName(r) != "" {
		// The live script swaps fragments into the page; an error page in
		// the middle of a table would be worse than a plain status.
		http.Error(w, p.Message, status)
		return
	}
	s.render(w, r, status, "error", "", p.Heading, p)
}

// asset returns the URL of an embedded asset, versioned by content.
func (s *server) asset(name string) string {
	return "/static/" + name + "?v=" + s.assetVersion
}

func (s *server) handleStatic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	f, err := s.static.Open(name)
	if err != nil {
		s.fail(w, r, drover.Errorf(drover.NotFound, "no asset %s", name))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		s.fail(w, r, drover.Errorf(drover.NotFound, "no asset %s", name))
		return
	}
	if r.URL.Query().Get("v") == s.assetVersion {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	rs, ok := f.(io.ReadSeeker)
	if !ok {
		s.fail(w, r, fmt.Errorf("asset %s is not seekable", name))
		return
	}
	// embed.FS has no modification times; the ETag carries the version.
	w.Header().Set("ETag", `"`+s.assetVersion+"-"+path.Base(name)+`"`)
	http.ServeContent(w, r, name, time.Time{}, rs)
}

// hashFS returns a short hash of every file in fsys.
func hashFS(fsys fs.FS) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// trimTitle keeps page titles readable in a tab.
func trimTitle(s string) string {
	const maxRunes = 80
	s = strings.TrimSpace(s)
	if r := []rune(s); len(r) > maxRunes {
		s = string(r[:maxRunes]) + "…"
	}
	return s
}
