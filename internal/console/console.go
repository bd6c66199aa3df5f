// Package console is ippool's web console: hand-written HTML, CSS and
// JavaScript embedded in the binary and served under /ui/ by every server
// (docs/design.md#web-console). The files hold no data; the pages read the
// same /v1 API as the CLI, with the operator's token, from the browser.
// Nothing is fetched from elsewhere: no fonts, scripts or styles off the
// server, so the console works on an isolated network and a Content
// Security Policy can allow only the server itself.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// pages are the console's pages, as html/template files that share one
// frame (pages/layout.html); each is rendered once, when the binary starts.
//
//go:embed pages
var pages embed.FS

// Prefix is where the console is served.
const Prefix = "/ui/"

// file is a static file with its validator, computed once.
type file struct {
	name string
	body []byte
	etag string
}

// files is read once from the binary. An embedded file cannot fail to read
// short of a broken build; if one did, it is left out and its page answers
// 404 (TestConsoleFiles fails such a build) rather than panicking the server.
var files = func() map[string]file {
	out := map[string]file{}
	fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return nil
		}
		add(out, strings.TrimPrefix(p, "static/"), b)
		return nil
	})
	names, _ := fs.Glob(pages, "pages/*.html")
	for _, p := range names {
		if path.Base(p) == "layout.html" {
			continue
		}
		if b, err := render(path.Base(p)); err == nil {
			add(out, path.Base(p), b)
		}
	}
	return out
}()

func add(files map[string]file, name string, body []byte) {
	sum := sha256.Sum256(body)
	files[name] = file{name: name, body: body, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

// render makes the page of file name in pages: the layout, filled in by
// the page's own templates.
func render(name string) ([]byte, error) {
	t, err := template.ParseFS(pages, "pages/layout.html", "pages/"+name)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	page := strings.TrimSuffix(name, ".html")
	if page == "index" {
		page = "overview" // app.js's name for it, from <body data-page>
	}
	err = t.ExecuteTemplate(&b, "layout", struct{ Page string }{page})
	return b.Bytes(), err
}

// securityHeaders keep the pages to this server's own scripts and styles,
// out of other sites' frames, and from leaking their URLs (which may name
// clients) in a Referer.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
	"X-Content-Type-Options": "nosniff",
	"X-Frame-Options":        "DENY",
	"Referrer-Policy":        "no-referrer",
	// Revalidate each time: the ETag makes that a 304, and an upgraded
	// server's files are never mixed with an older one's.
	"Cache-Control": "no-cache",
}

// Handler serves the console's files under Prefix. A page is named without
// its .html (/ui/pool is pool.html) and the overview is /ui/ itself, so each
// page has one address.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range securityHeaders {
			w.Header().Set(k, v)
		}
		f, ok := lookup(strings.TrimPrefix(r.URL.Path, Prefix))
		if !ok {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte("no such page in the ippool console: " + r.URL.Path + "\n"))
			return
		}
		w.Header().Set("ETag", f.etag)
		http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
	})
}

// lookup finds the file for a path under Prefix.
func lookup(name string) (file, bool) {
	switch {
	case name == "":
		name = "index.html"
	case name == "index" || strings.Contains(name, "/") || strings.HasSuffix(name, ".html"):
		return file{}, false
	case !strings.Contains(name, "."):
		name += ".html"
	}
	f, ok := files[name]
	return f, ok
}

// Pages lists the console's page paths, for tests.
func Pages() []string {
	var out []string
	for name := range files {
		if p, ok := strings.CutSuffix(name, ".html"); ok {
			if p == "index" {
				p = ""
			}
			out = append(out, Prefix+p)
		}
	}
	return out
}
