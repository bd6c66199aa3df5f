package console

import (
	"bytes"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
)

// The files keep to what the Content Security Policy allows and to the
// promise that nothing comes from elsewhere: no inline scripts, styles or
// event handlers, no address off this server in an attribute, an import or
// a CSS url().
func TestFilesStayWithinThePolicy(t *testing.T) {
	offSite := regexp.MustCompile(`(?i)(src|href|action)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?(https?:)?//`)
	inline := regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>\s*[^<\s]|<style|\sstyle\s*=|\son[a-z]+\s*=`)
	if len(files) < 7 {
		t.Fatalf("only %d embedded files", len(files))
	}
	for name, f := range files {
		body := string(f.body)
		if m := offSite.FindString(body); m != "" {
			t.Errorf("%s refers off the server: %q", name, m)
		}
		if strings.HasSuffix(name, ".html") {
			if m := inline.FindString(body); m != "" {
				t.Errorf("%s has inline code or style, which the policy blocks: %q", name, m)
			}
			for _, want := range []string{`<script src="/ui/app.js" defer></script>`, `<link rel="stylesheet" href="/ui/app.css">`, `<meta name="viewport"`, `id="content"`, `id="signin"`, `id="confirm"`} {
				if !strings.Contains(body, want) {
					t.Errorf("%s lacks %s", name, want)
				}
			}
		}
	}
}

func TestPagesHaveOneAddressEach(t *testing.T) {
	h := Handler()
	for _, p := range Pages() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", p, nil))
		if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
			t.Errorf("%s: %d %s", p, w.Code, w.Header().Get("Content-Type"))
		}
		if p != Prefix {
			w = httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("GET", p+".html", nil))
			if w.Code != http.StatusNotFound {
				t.Errorf("%s.html: %d", p, w.Code)
			}
		}
	}
	for _, p := range []string{"/ui/index", "/ui/nothing", "/ui/static/app.js", "/ui/x/app.js"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", p, nil))
		if w.Code != http.StatusNotFound {
			t.Errorf("%s: %d", p, w.Code)
		}
	}
}

// Every page template renders in the shared frame, with its own entry in
// the navigation marked current, and is served: a template that failed
// to parse would be left out of files and its page would answer 404.
func TestEveryPageRenders(t *testing.T) {
	names, err := fs.Glob(pages, "pages/*.html")
	if err != nil || len(names) < 6 {
		t.Fatalf("page templates %v, %v", names, err)
	}
	for _, p := range names {
		name := path.Base(p)
		if name == "layout.html" {
			continue
		}
		b, err := render(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(files[name].body, b) {
			t.Errorf("%s is not served as rendered", name)
		}
		href := "/ui/" + strings.TrimSuffix(name, ".html")
		if name == "index.html" {
			href = "/ui/"
		}
		if current := regexp.MustCompile(`<a href="([^"]*)" aria-current="page">`).FindAllStringSubmatch(string(b), -1); len(current) != 1 || current[0][1] != href {
			t.Errorf("%s marks %v current in the navigation, want %s alone", name, current, href)
		}
	}
}
