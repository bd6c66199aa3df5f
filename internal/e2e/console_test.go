package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/ippool/ippool/internal/testcluster"
	"github.com/ippool/ippool/wire"
)

var artifacts = flag.String("artifacts", "", "directory for the console tests' screenshots (default: ippool-console-artifacts in the temp dir)")

// artifactDir is where a console test saves its screenshots: outside the
// tree, kept after the test so they can be looked at.
func artifactDir(t *testing.T, name string) string {
	t.Helper()
	root := *artifacts
	if root == "" {
		root = filepath.Join(os.TempDir(), "ippool-console-artifacts")
	}
	dir := filepath.Join(root, name)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// chromiumPath finds Debian's chromium (or another Chrome). Without one the
// test skips, except under CI=true, where ./test.sh has installed it and
// its absence is a failure.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium found (chromium, chromium-browser, google-chrome); ./test.sh installs Debian's chromium package")
	}
	t.Skip("no Chromium found: install Debian's chromium package (./test.sh does) to run the console's browser tests")
	return ""
}

// browser is one headless Chromium tab driven through the console.
type browser struct {
	t   *testing.T
	ctx context.Context
	dir string
	n   int

	mu       sync.Mutex
	problems []string
}

// newBrowser starts Chromium; chromedp's allocator kills the process it
// started when the test ends. Uncaught exceptions and Content Security
// Policy reports from the pages fail the test.
func newBrowser(t *testing.T, dir string) *browser {
	t.Helper()
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]), chromedp.ExecPath(chromiumPath(t)), chromedp.WindowSize(1280, 860))
	if os.Geteuid() == 0 {
		// Chromium's sandbox refuses to run as root (a CI container).
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	b := &browser{t: t, ctx: ctx, dir: dir}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || m.Source == "security" || strings.Contains(m.Text, "Content Security Policy") {
				b.mu.Lock()
				b.problems = append(b.problems, fmt.Sprintf("%s:%d: %s", m.URL, m.Line+1, m))
				b.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, p := range b.problems {
			t.Errorf("the page reported: %s", p)
		}
	})
	if err := b.viewport(1280, 860, false); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) open(url string) {
	b.t.Helper()
	b.do(chromedp.Navigate(url))
}

// waitFor polls a JavaScript condition in the page until it holds, for at
// most within; the poll runs in the browser, on each 50 ms tick.
func (b *browser) waitFor(what, cond string, within time.Duration) time.Duration {
	b.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(b.ctx, within+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingTimeout(within), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		b.t.Fatalf("waiting %v for %s (%s): %v\npage: %s", within, what, cond, err, b.eval(`document.querySelector('main') ? document.querySelector('main').innerText.slice(0, 2000) : ''`))
	}
	return time.Since(start)
}

// eval runs JavaScript and returns its result as a string.
func (b *browser) eval(expr string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`String(`+expr+`)`))
	if err != nil {
		b.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func (b *browser) click(css string) {
	b.t.Helper()
	b.do(chromedp.Click(chromedp.CSS(css)))
}

// clickLoads clicks something that loads a page, and waits for the load.
func (b *browser) clickLoads(css string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(css))); err != nil {
		b.t.Fatal(err)
	}
}

// fill types text into an emptied input, as a user would.
func (b *browser) fill(css, text string) {
	b.t.Helper()
	b.eval(fmt.Sprintf(`document.querySelector(%q).value = ''`, css))
	b.do(chromedp.SendKeys(chromedp.CSS(css), text))
}

// shot saves a screenshot of the whole page as NN-name.png.
func (b *browser) shot(name string) { b.screenshot(name, chromedp.FullScreenshot(100)) }

// shotView saves what the window shows, as a user sees a dialog over it.
func (b *browser) shotView(name string) { b.screenshot(name, chromedp.CaptureScreenshot()) }

func (b *browser) screenshot(name string, capture chromedp.Action[[]byte]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, capture)
	if err != nil {
		b.t.Fatal(err)
	}
	b.n++
	if err := os.WriteFile(filepath.Join(b.dir, fmt.Sprintf("%02d-%s.png", b.n, name)), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) viewport(w, h int64, phone bool) error {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if phone {
		return chromedp.Do(ctx, chromedp.EmulateViewport(w, h, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	}
	return chromedp.Do(ctx, chromedp.EmulateViewport(w, h))
}

// scripts turns the page's JavaScript on or off.
func (b *browser) scripts(on bool) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: !on}); err != nil {
		b.t.Fatal(err)
	}
}

// colorScheme makes prefers-color-scheme answer dark or light.
func (b *browser) colorScheme(scheme string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
	}); err != nil {
		b.t.Fatal(err)
	}
}

// apiGet reads one API answer as JSON.
func apiGet[T any](t *testing.T, s *testcluster.Server, path string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	status, body, err := s.Do(ctx, http.MethodGet, path, nil)
	var v T
	if err != nil || status != 200 || json.Unmarshal(body, &v) != nil {
		t.Fatalf("GET %s on %s: %d %s %v", path, s.ID, status, body, err)
	}
	return v
}

// allocMany makes each client's domains through the API, spread over the
// servers, and fails the test on any error.
func allocMany(t *testing.T, c *testcluster.Cluster, counts map[string]int) {
	t.Helper()
	type job struct {
		client string
		d      int
	}
	jobs := make(chan job)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for j := range jobs {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := alloc(ctx, c.Servers[(w+j.d)%len(c.Servers)], j.client, fmt.Sprintf("d%03d.%s.example", j.d, j.client))
				cancel()
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for client, n := range counts {
		for d := range n {
			jobs <- job{client, d}
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// domainsOf is the client's domains as the API answers, read through the
// read barrier.
func domainsOf(t *testing.T, s *testcluster.Server, client string) []string {
	t.Helper()
	l := apiGet[wire.List](t, s, "/v1/clients/"+client+"?consistent=true")
	var out []string
	for _, m := range l.Mappings {
		out = append(out, m.Domain)
	}
	return out
}

// The console in a real browser against a real 3-server cluster: the
// overview lists the servers and the leader; after allocations through the
// API the pool page ranks the busiest client first with its count;
// searching that client lists its mappings; releasing one through the
// console removes it from the API's answer; a killed server shows as
// unreachable within seconds. Screenshots of each page, on a desktop and a
// phone, light and dark, go to the artifacts directory.
func TestConsoleInBrowser(t *testing.T) {
	chromiumPath(t)
	c := testcluster.Start(t, 3, testcluster.Options{FirstIP: 141, Args: []string{"--pool", "10.77.0.0/24"}})
	leader := c.WaitReady(30 * time.Second)
	s1 := c.Servers[0]
	b := newBrowser(t, artifactDir(t, "console"))

	// Overview: three servers, the leader named. / leads to /ui/.
	b.open(s1.URL() + "/")
	b.waitFor("three reachable servers and the leader", fmt.Sprintf(
		`document.querySelectorAll('#servers tbody tr[data-reachable="true"]').length === 3 && document.getElementById('t-leader').textContent === %q && document.querySelector('#servers tr[data-server=%q][data-role="leader"]') !== null`,
		leader.ID, leader.ID), 10*time.Second)
	if got := b.eval(`location.pathname`); got != "/ui/" {
		t.Fatalf("/ led to %s", got)
	}

	// Load through the API while the console watches, for the charts: a
	// pace that swells and ebbs, mostly known domains and lookups, now and
	// then a new one (at most 100). The busiest client gets 150 of the
	// pool's 256 addresses.
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for i := 0; ; i++ {
			select {
			case <-stopLoad:
				return
			case <-time.After(time.Duration(16+12*math.Sin(float64(i)/60)) * time.Millisecond):
			}
			d := i % 40
			if i%25 == 0 {
				d = 40 + i/25%60
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s := c.Running()[i%len(c.Running())]
			if ip, err := alloc(ctx, s, "steady", fmt.Sprintf("s%d.steady.example", d)); err == nil && i%2 == 0 {
				lookup(ctx, s, "steady", ip)
			}
			cancel()
		}
	}()
	defer func() {
		select {
		case <-stopLoad:
		default:
			close(stopLoad)
		}
		<-loadDone
	}()
	counts := map[string]int{"busy": 150, "gateway-7": 64, "laptop-ada": 23, "phone-bob": 9}
	for i := range 16 {
		counts[fmt.Sprintf("node-%02d", i)] = 1 + (i*7)%19
	}
	allocMany(t, c, counts)

	// Pool: busy ranks first with 150 mappings; its pool is pictured.
	b.open(s1.URL() + "/ui/pool")
	b.waitFor("busy ranked first with 150", `(() => { const r = document.querySelector('#ranking tbody tr'); return r && r.dataset.client === 'busy' && r.dataset.mappings === '150' && document.getElementById('occ-title').textContent.endsWith('busy'); })()`, 10*time.Second)
	if got := b.eval(`document.querySelector('#ranking tbody tr td:nth-child(3)').textContent`); got != "150" {
		t.Fatalf("busy's count shows %q", got)
	}
	if got := b.eval(`document.getElementById('rank-range').textContent`); !strings.Contains(got, "of 21 clients") {
		t.Fatalf("ranking range: %q", got)
	}
	if got := b.eval(`document.getElementById('nav-foot').textContent`); !strings.Contains(got, "ACLs off") || strings.Contains(got, "your token") {
		t.Errorf("with ACLs off the footer says %q", got)
	}

	// Client: search busy; its first page of mappings is listed.
	b.open(s1.URL() + "/ui/client")
	b.fill("#client-id", "busy")
	b.click("#search-btn")
	b.waitFor("busy's first 50 mappings", `document.querySelectorAll('#mappings tbody tr[data-domain]').length === 50 && document.getElementById('c-mappings').textContent === '150'`, 10*time.Second)
	if got := b.eval(`document.getElementById('map-range').textContent`); !strings.HasPrefix(got, "1–50 of 150") {
		t.Fatalf("mappings range: %q", got)
	}
	// Looking up an address finds its domain and highlights it.
	ip := b.eval(`document.querySelectorAll('#mappings tbody tr')[7].dataset.ip`)
	domain := b.eval(`document.querySelectorAll('#mappings tbody tr')[7].dataset.domain`)
	b.fill("#lookup-ip", ip)
	b.click("#lookup-btn")
	b.waitFor("the looked-up address's domain", fmt.Sprintf(`document.getElementById('lookup-result').textContent.includes(%q) && document.querySelector('tr.flash[data-ip=%q]') !== null`, domain, ip), 5*time.Second)
	b.shot("client")

	// Release one mapping through the console: confirm, then the API no
	// longer has it.
	victim := b.eval(`document.querySelectorAll('#mappings tbody tr')[3].dataset.domain`)
	if !slices.Contains(domainsOf(t, s1, "busy"), victim) {
		t.Fatalf("%s is not busy's before the release", victim)
	}
	b.click(fmt.Sprintf(`button[data-release=%q]`, victim))
	b.waitFor("the confirmation dialog", `document.getElementById('confirm').open`, 5*time.Second)
	b.shotView("client-confirm-release")
	b.click("#confirm-ok")
	b.waitFor("149 mappings shown", `document.getElementById('c-mappings').textContent === '149'`, 10*time.Second)
	for _, s := range c.Servers {
		if ds := domainsOf(t, s, "busy"); slices.Contains(ds, victim) || len(ds) != 149 {
			t.Fatalf("%s still answers %d mappings for busy, %s among them: %v", s.ID, len(ds), victim, slices.Contains(ds, victim))
		}
	}

	// Back to the pool page for its picture (with the held address), then
	// the overview with a few seconds of rates behind it.
	b.open(s1.URL() + "/ui/pool")
	b.waitFor("the ranking", `document.querySelector('#ranking tbody tr[data-client="busy"]') !== null && document.getElementById('occ-sub').textContent !== ''`, 10*time.Second)
	b.shot("pool")
	b.open(s1.URL() + "/ui/")
	// The charts come from reads of /v1/stats every 2 s, kept across the
	// pages: wait for 16 s of them.
	b.waitFor("rates charted", `document.querySelector('#charts .chart[data-series="allocations"]')?.dataset.span >= 16000 && document.getElementById('poolcfg').textContent.includes('10.77.0.0/24')`, 25*time.Second)
	close(stopLoad)
	<-loadDone
	b.shot("overview")

	// Phone-sized and dark.
	if err := b.viewport(390, 844, true); err != nil {
		t.Fatal(err)
	}
	b.shot("overview-phone")
	b.open(s1.URL() + "/ui/pool")
	b.waitFor("the ranking", `document.querySelector('#ranking tbody tr[data-client="busy"]') !== null`, 10*time.Second)
	b.shot("pool-phone")
	b.open(s1.URL() + "/ui/client?id=busy")
	b.waitFor("busy's mappings", `document.querySelectorAll('#mappings tbody tr[data-domain]').length === 50`, 10*time.Second)
	b.shot("client-phone")
	if err := b.viewport(1280, 860, false); err != nil {
		t.Fatal(err)
	}
	b.colorScheme("dark")
	b.open(s1.URL() + "/ui/cluster")
	b.waitFor("three servers", `document.querySelectorAll('#servers tbody tr[data-reachable="true"]').length === 3`, 10*time.Second)
	b.shot("cluster-dark")
	b.colorScheme("light")

	// Kill a server the console does not read from: the overview shows it
	// unreachable within seconds.
	b.open(s1.URL() + "/ui/")
	b.waitFor("three reachable servers", `document.querySelectorAll('#servers tbody tr[data-reachable="true"]').length === 3`, 10*time.Second)
	dead := c.Servers[2]
	dead.Kill()
	took := b.waitFor(dead.ID+" unreachable", fmt.Sprintf(`document.querySelector('#servers tr[data-server=%q][data-reachable="false"]') !== null && document.getElementById('t-servers').textContent === '2 / 3'`, dead.ID), 5*time.Second)
	t.Logf("the overview showed %s unreachable %v after its SIGKILL", dead.ID, took.Round(time.Millisecond))
	b.shot("overview-server-down")
	b.open(s1.URL() + "/ui/cluster")
	b.waitFor(dead.ID+" unreachable on the cluster page", fmt.Sprintf(`document.querySelector('#servers tr[data-server=%q][data-reachable="false"]') !== null`, dead.ID), 5*time.Second)
	b.shot("cluster-server-down")

	// Remove the dead server through the console: confirmed, it leaves the
	// membership every server reports.
	b.click(fmt.Sprintf(`button[data-remove=%q]`, dead.ID))
	b.waitFor("the confirmation dialog", `document.getElementById('confirm').open && document.getElementById('confirm-cli').textContent === 'ippool cluster remove s3'`, 5*time.Second)
	b.click("#confirm-ok")
	b.waitFor(dead.ID+" gone from the cluster page", fmt.Sprintf(`document.querySelectorAll('#servers tbody tr').length === 2 && document.querySelector('#servers tr[data-server=%q]') === null`, dead.ID), 10*time.Second)
	for _, s := range c.Servers[:2] {
		if st := apiGet[wire.Status](t, s, "/v1/cluster"); len(st.Servers) != 2 || slices.ContainsFunc(st.Servers, func(x wire.ServerStatus) bool { return x.ID == dead.ID }) {
			t.Fatalf("%s still lists %s: %+v", s.ID, dead.ID, st.Servers)
		}
	}

	// Without JavaScript a page still says what it shows and where the
	// JSON is, and the navigation works; the panels JavaScript fills stay
	// hidden.
	b.scripts(false)
	b.open(s1.URL() + "/ui/")
	b.clickLoads(`nav a[href="/ui/pool"]`)
	if got := b.eval(`location.pathname`); got != "/ui/pool" {
		t.Fatalf("the navigation led to %s", got)
	}
	if got := b.eval(`document.querySelector('main').innerText`); !strings.Contains(got, "JavaScript, which is off") || !strings.Contains(got, "/v1/pool/clients") || strings.Contains(got, "Clients by fill") {
		t.Fatalf("the pool page without JavaScript shows:\n%s", got)
	}
	b.shot("pool-no-javascript")
}

// With ACLs bootstrapped the console asks for a token, refuses a wrong one
// with the API's sentence, shows what a read token may not do as disabled,
// and with an admin token releases through the API.
func TestConsoleWithACLs(t *testing.T) {
	chromiumPath(t)
	c := testcluster.Start(t, 3, testcluster.Options{FirstIP: 145, Args: []string{"--pool", "10.78.0.0/24"}})
	s1 := c.Servers[0]
	status, body := call(t, s1, "", "POST", "/v1/acl/bootstrap", "")
	var root wire.Token
	if status != 200 || json.Unmarshal(body, &root) != nil {
		t.Fatalf("bootstrap: %d %s", status, body)
	}
	c.SetToken(root.Secret)
	read := newToken(t, s1, root.Secret, "read")
	allocMany(t, c, map[string]int{"acl-client": 12})
	b := newBrowser(t, artifactDir(t, "console-acl"))

	b.open(s1.URL() + "/ui/")
	b.waitFor("the sign-in form", `!document.getElementById('signin').hidden && document.getElementById('content').hidden`, 10*time.Second)
	b.shot("signin")
	b.fill("#token", "ippool_"+strings.Repeat("A", 43))
	b.click("#signin-submit")
	b.waitFor("the API's refusal", `!document.getElementById('signin-error').hidden && document.getElementById('signin-error').textContent.length > 0`, 10*time.Second)
	refusal := b.eval(`document.getElementById('signin-error').textContent`)
	_, want := call(t, s1, "ippool_"+strings.Repeat("A", 43), "GET", "/v1/acl/self", "")
	var apiErr wire.Error
	if json.Unmarshal(want, &apiErr) != nil || refusal != apiErr.Message {
		t.Fatalf("the console says %q, the API %s", refusal, want)
	}

	// A read token: the overview, and release buttons disabled.
	b.fill("#token", read.Secret)
	b.click("#signin-submit")
	b.waitFor("the overview with a read token", `document.querySelectorAll('#servers tbody tr[data-reachable="true"]').length === 3 && document.getElementById('who').textContent === 'read token'`, 10*time.Second)
	if got := b.eval(`document.getElementById('nav-foot').textContent`); !strings.Contains(got, "with your token") {
		t.Errorf("with a token the footer says %q", got)
	}
	b.open(s1.URL() + "/ui/client?id=acl-client")
	b.waitFor("acl-client's mappings, release disabled", `document.querySelectorAll('#mappings tbody tr[data-domain]').length === 12 && [...document.querySelectorAll('button[data-release]')].every(x => x.disabled) && document.getElementById('release-all').disabled`, 10*time.Second)
	b.shot("client-read-token")
	// A write the role may not make, forced past the disabled button: the
	// console shows the API's refusal as it is.
	victim := b.eval(`document.querySelector('#mappings tbody tr').dataset.domain`)
	b.eval(fmt.Sprintf(`document.querySelector('button[data-release=%q]').disabled = false`, victim))
	b.click(fmt.Sprintf(`button[data-release=%q]`, victim))
	b.waitFor("the confirmation dialog", `document.getElementById('confirm').open`, 5*time.Second)
	b.click("#confirm-ok")
	b.waitFor("the API's refusal", `!document.getElementById('banner').hidden`, 10*time.Second)
	status, body = call(t, s1, read.Secret, "DELETE", "/v1/clients/acl-client/domains/"+victim, "")
	var refused wire.Error
	if status != 403 || json.Unmarshal(body, &refused) != nil {
		t.Fatalf("a release with a read token: %d %s", status, body)
	}
	if got := b.eval(`document.querySelector('#banner span').textContent`); got != refused.Message {
		t.Fatalf("the console says %q; the API %q (%s)", got, refused.Message, refused.Code)
	}
	b.shot("client-read-token-refused")
	b.open(s1.URL() + "/ui/cluster")
	b.waitFor("remove disabled", `document.querySelectorAll('button[data-remove]').length === 3 && [...document.querySelectorAll('button[data-remove]')].every(x => x.disabled)`, 10*time.Second)

	// Sign out, sign in as admin, release one.
	b.clickLoads("#signout")
	b.waitFor("the sign-in form again", `!document.getElementById('signin').hidden`, 10*time.Second)
	b.fill("#token", root.Secret)
	b.click("#signin-submit")
	b.waitFor("remove enabled for an admin", `document.querySelectorAll('button[data-remove]').length === 3 && [...document.querySelectorAll('button[data-remove]')].every(x => !x.disabled) && document.getElementById('who').textContent === 'admin token'`, 10*time.Second)
	b.open(s1.URL() + "/ui/client?id=acl-client")
	b.waitFor("release enabled", `document.querySelectorAll('button[data-release]:not([disabled])').length === 12`, 10*time.Second)
	victim = b.eval(`document.querySelector('#mappings tbody tr').dataset.domain`)
	b.click(fmt.Sprintf(`button[data-release=%q]`, victim))
	b.waitFor("the confirmation dialog", `document.getElementById('confirm').open`, 5*time.Second)
	b.click("#confirm-ok")
	b.waitFor("11 mappings shown", `document.getElementById('c-mappings').textContent === '11'`, 10*time.Second)
	if ds := domainsOf(t, c.Servers[1], "acl-client"); slices.Contains(ds, victim) || len(ds) != 11 {
		t.Fatalf("after the release the API answers %v", ds)
	}
	b.shot("client-admin-after-release")
}
