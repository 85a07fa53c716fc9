package web

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/drover-ci/drover/internal/api"
)

// hostileLoadError is a refused config's message that tries to break out
// of the page: config errors quote the user's Starlark, which anyone with
// commit access to the config repository writes.
const hostileLoadError = "master.star:7:3: builder \"<script>alert(1)</script>\": unknown step kind\n" +
	"master.star:9:1: name </pre><img src=x onerror=alert(2)> is not defined"

func TestAdminPage(t *testing.T) {
	f := newFixture(t)
	r := f.get(t, "/admin")
	if r.status != http.StatusOK {
		t.Fatalf("GET /admin: %d\n%s", r.status, r.body)
	}
	for _, want := range []string{
		`<a href="/admin" aria-current="page">Admin</a>`,
		`<code id="config-path">/etc/drover/master.star</code>`,
		`<code id="config-hash" title="0123456789abcdef0123456789abcdef">0123456789ab</code>`,
		`<dd id="config-builders">3</dd>`,
		`data-fragment="config" data-events="config.loaded"`,
		`id="reload-form"`, `placeholder="admin token"`, `id="reload-submit">Reload config</button>`,
		`<code class="cmd">drover reconfig</code>`,
		`id="config-ok"`,
		`<tr data-master="ci1"><td><code>ci1</code> <span class="muted">(this one)</span></td>`,
		`<span class="badge r-success">alive</span>`,
		`<tr data-master="ci2"><td><code>ci2</code></td>`,
		`<span class="badge r-exception">dead</span>`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("admin page lacks %q", want)
		}
	}
	if strings.Contains(r.body, `id="config-error"`) {
		t.Error("admin page shows an error box without a refused load")
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("admin page CSP %q", csp)
	}
	// Every other page has the nav entry too, not marked current.
	if r := f.get(t, "/queue"); !strings.Contains(r.body, `<a href="/admin">Admin</a>`) {
		t.Error("the queue page has no Admin nav entry")
	}
}

// A master whose config differs from another master's of its site says so,
// escaping what it shows.
func TestAdminPageConfigDiffers(t *testing.T) {
	f := newFixture(t)
	f.b.mu.Lock()
	f.b.config.Differs, f.b.config.DiffersHash = "ci2<b>", "0123abcd"
	f.b.mu.Unlock()
	r := f.get(t, "/admin")
	for _, want := range []string{`id="config-differs"`, `master <code>ci2&lt;b&gt;</code>`, `<code>0123abcd</code>`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("admin page lacks %q", want)
		}
	}
}

func TestAdminPageRefusedLoad(t *testing.T) {
	f := newFixture(t)
	f.b.setNextConfig(testConfig{err: errors.New(hostileLoadError)})
	if err := f.b.Reload(context.Background()); err == nil {
		t.Fatal("Reload of a broken config succeeded")
	}

	tests := []struct {
		name string
		path string
		want []string
	}{
		{"page", "/admin", []string{`<a href="/admin" aria-current="page">Admin</a>`}},
		{"fragment", "/admin?fragment=config", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.get(t, tt.path)
			if r.status != http.StatusOK {
				t.Fatalf("GET %s: %d", tt.path, r.status)
			}
			want := append([]string{
				`<div class="errbox" id="config-error">`,
				"The last load was refused",
				"the config above stays in force",
				`<pre class="errtext">master.star:7:3: builder &#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;: unknown step kind` + "\n" +
					`master.star:9:1: name &lt;/pre&gt;&lt;img src=x onerror=alert(2)&gt; is not defined</pre>`,
				`title="0123456789abcdef0123456789abcdef"`, // the old config stays
			}, tt.want...)
			for _, w := range want {
				if !strings.Contains(r.body, w) {
					t.Errorf("GET %s lacks %q\n%s", tt.path, w, r.body)
				}
			}
			for _, bad := range []string{"<script>alert", "<img src=x", `id="config-ok"`} {
				if strings.Contains(r.body, bad) {
					t.Errorf("GET %s contains %q", tt.path, bad)
				}
			}
			if tt.path != "/admin" && strings.Contains(r.body, "<!doctype html>") {
				t.Errorf("fragment is a whole page")
			}
		})
	}
}

func TestAdminPageNoConfigFile(t *testing.T) {
	f := newFixture(t)
	f.b.mu.Lock()
	f.b.config = api.ConfigStatus{LoadedAt: time.Now()}
	f.b.mu.Unlock()
	r := f.get(t, "/admin")
	if !strings.Contains(r.body, "this master was not started from a config file") {
		t.Errorf("admin page of a master without a file:\n%s", r.body)
	}
}

// TestBrowserReloadButton reloads the config from the admin page in a
// real browser through the real API handler: a read token is refused, a
// broken config shows the API's file:line message and the status's error
// box, and a good one shows the new hash without a page reload.
func TestBrowserReloadButton(t *testing.T) {
	f := newFixture(t)
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", api.NewHandler(f.b, testLogger(t), api.Options{PublicReads: true, Heartbeat: time.Second}))
	mux.Handle("/", f.srv)
	ts := httptest.NewServer(mux) // listens on 127.0.0.1
	t.Cleanup(ts.Close)
	ctx := newBrowser(t) // closed before the server, so streams end first

	must(t, chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/admin")))
	waitFor(t, ctx, "the script to show the form", `!document.getElementById("reload-form").hidden`)
	waitFor(t, ctx, "the live stream", `!document.getElementById("live-status").hidden`)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.droverNoReload = true`)); err != nil {
		t.Fatal(err)
	}
	reload := func(token string) {
		t.Helper()
		must(t, chromedp.Do(ctx, chromedp.SetValue("#reload-token", token), chromedp.Click("#reload-submit")))
	}

	reload(readerToken)
	waitFor(t, ctx, "the role refusal", `document.getElementById("reload-error").textContent.includes("role read may not do this")`)

	f.b.setNextConfig(testConfig{err: errors.New(hostileLoadError)})
	reload(adminToken)
	waitFor(t, ctx, "the refusal with file:line", `!document.getElementById("reload-error").hidden &&
		document.getElementById("reload-error").textContent.includes("config refused: master.star:7:3:")`)
	waitFor(t, ctx, "the error box", `document.querySelector("#config-error pre") !== null &&
		document.querySelector("#config-error pre").textContent.includes("onerror=alert(2)")`)
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("main img, main script").length`)); err != nil || n != 0 {
		t.Errorf("the hostile error made %d elements (%v)", n, err)
	}
	screenshot(t, ctx, "admin-refused")

	f.b.setNextConfig(testConfig{hash: "abcdef0123456789abcdef0123456789"})
	reload(adminToken)
	waitFor(t, ctx, "the confirmation", `document.getElementById("reload-done").textContent === "Config reloaded: hash abcdef012345, 0 builders."`)
	waitFor(t, ctx, "the new hash", `document.getElementById("config-hash").textContent === "abcdef012345" &&
		document.getElementById("config-builders").textContent === "0" &&
		document.getElementById("config-error") === null`)
	waitFor(t, ctx, "the error cleared", `document.getElementById("reload-error").hidden`)
	screenshot(t, ctx, "admin")
	if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.droverNoReload === true`)); err != nil || !ok {
		t.Errorf("the admin page reloaded (%v)", err)
	}
}
