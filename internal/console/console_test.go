package console

import (
	"net/http"
	"net/http/httptest"
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
