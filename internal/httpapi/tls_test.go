package httpapi

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ippool/ippool/internal/testcerts"
)

// testTLS is HTTPS for 127.0.0.1 from a CA of its own, and a client
// configuration trusting that CA.
func testTLS(t *testing.T) (*TLS, *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "ca")
	srv := ca.Server(t, dir, "server", "127.0.0.1")
	st, err := LoadTLS(TLSFiles{Cert: srv.CertFile, Key: srv.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	return st, testcerts.ClientConfig(ca)
}

// handshake runs a TLS handshake between the server configuration and a
// client, over loopback, and a byte from the server after it, so that an
// error the server finds only after the client is done (a TLS 1.3 client
// certificate it refuses) reaches the client too.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(5 * time.Second)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		s := tls.Server(c, server)
		if s.Handshake() == nil {
			s.Write([]byte{1})
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	cl := tls.Client(c, client)
	err = cl.Handshake()
	if err == nil {
		_, err = io.ReadFull(cl, make([]byte, 1))
	}
	return cl.ConnectionState(), err
}

// Reload swaps the certificate and the client CA together for every later
// handshake, keeps both when the files are broken, and holds sessions
// resumed from before it to the new client CA.
func TestTLSReloadSwapsCertificateAndClientCA(t *testing.T) {
	dir := t.TempDir()
	ca1, ca2 := testcerts.NewCA(t, dir, "ca1"), testcerts.NewCA(t, dir, "ca2")
	srv1, srv2 := ca1.Server(t, dir, "server1", "127.0.0.1"), ca2.Server(t, dir, "server2", "127.0.0.1")
	cl1, cl2 := ca1.Client(t, dir, "client1"), ca2.Client(t, dir, "client2")
	// The files the server reads, first from ca1.
	live := testcerts.Pair{CertFile: dir + "/live.pem", KeyFile: dir + "/live-key.pem"}
	srv1.Install(t, live)
	clientCA := dir + "/client-ca.pem"
	copyFile(t, ca1.CertFile, clientCA)

	st, err := LoadTLS(TLSFiles{Cert: live.CertFile, Key: live.KeyFile, ClientCA: clientCA})
	if err != nil {
		t.Fatal(err)
	}
	server := st.Config()
	bothCAs := x509.NewCertPool()
	bothCAs.AppendCertsFromPEM(readFile(t, ca1.CertFile))
	bothCAs.AppendCertsFromPEM(readFile(t, ca2.CertFile))
	resuming := &tls.Config{RootCAs: bothCAs, ServerName: "localhost", Certificates: []tls.Certificate{cl1.TLS}, ClientSessionCache: tls.NewLRUClientSessionCache(4)}

	expect := func(what string, client *tls.Config, issuer string) {
		t.Helper()
		if client.ServerName == "" {
			client.ServerName = "localhost"
		}
		cs, err := handshake(t, server, client)
		switch {
		case issuer == "" && err == nil:
			t.Errorf("%s: the handshake succeeded, want it refused", what)
		case issuer != "" && err != nil:
			t.Errorf("%s: %v", what, err)
		case issuer != "" && cs.PeerCertificates[0].Issuer.CommonName != issuer:
			t.Errorf("%s: served a certificate from %s, want %s", what, cs.PeerCertificates[0].Issuer.CommonName, issuer)
		}
	}
	expect("ca1's client", testcerts.ClientConfig(ca1, cl1), "ca1")
	expect("no client certificate", testcerts.ClientConfig(ca1), "")
	expect("ca2's client", testcerts.ClientConfig(ca1, cl2), "")
	expect("TLS 1.2", &tls.Config{RootCAs: ca1.Pool(), Certificates: []tls.Certificate{cl1.TLS}, MaxVersion: tls.VersionTLS12}, "")
	expect("a client trusting only ca2", testcerts.ClientConfig(ca2, cl1), "")
	expect("a resuming client's first connection", resuming, "ca1")
	if cs, err := handshake(t, server, resuming); err != nil || !cs.DidResume {
		t.Fatalf("a second connection did not resume its session (%v), so the test below proves nothing", err)
	}

	srv2.Install(t, live)
	copyFile(t, ca2.CertFile, clientCA)
	if err := st.Reload(); err != nil {
		t.Fatal(err)
	}
	expect("after the reload, ca2's client", testcerts.ClientConfig(ca2, cl2), "ca2")
	expect("after the reload, ca1's client", testcerts.ClientConfig(ca2, cl1), "")
	expect("after the reload, a session of ca1's client resumed", resuming, "")
	if got := st.Certificate().Issuer.CommonName; got != "ca2" {
		t.Errorf("Certificate() is from %s after the reload", got)
	}

	// Broken files: Reload fails and nothing changes.
	for _, c := range []struct{ name, file, content, want string }{
		{"garbage certificate", live.CertFile, "not a certificate", live.CertFile},
		{"key of another certificate", live.KeyFile, string(readFile(t, srv1.KeyFile)), "private key does not match"},
		{"garbage client CA", clientCA, "not a certificate", "holds no PEM certificate"},
		{"missing client CA", clientCA, "", "no such file"},
	} {
		saved := readFile(t, c.file)
		if c.content == "" {
			os.Remove(c.file)
		} else if err := os.WriteFile(c.file, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := st.Reload(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Reload said %v, want an error saying %q", c.name, err, c.want)
		}
		expect("after a failed reload ("+c.name+"), ca2's client", testcerts.ClientConfig(ca2, cl2), "ca2")
		if err := os.WriteFile(c.file, saved, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoadTLSRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "ca")
	srv := ca.Server(t, dir, "server", "127.0.0.1")
	for _, c := range []struct {
		name  string
		files TLSFiles
		want  string
	}{
		{"no key", TLSFiles{Cert: srv.CertFile}, "both a certificate and its key"},
		{"missing certificate", TLSFiles{Cert: dir + "/nope.pem", Key: srv.KeyFile}, dir + "/nope.pem"},
		{"client CA not PEM", TLSFiles{Cert: srv.CertFile, Key: srv.KeyFile, ClientCA: srv.KeyFile}, "holds no PEM certificate"},
	} {
		if _, err := LoadTLS(c.files); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}

// Over HTTPS, fasthttp's own answers (allocation) and the mux's (listing,
// through the adaptor) are the same as over HTTP.
func TestServerOverTLS(t *testing.T) {
	svc := startService(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := NewServer(svc, prometheus.NewRegistry(), log, Options{LoopbackHostsOnly: true})
	serverTLS, clientTLS := testTLS(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(tls.NewListener(ln, serverTLS.Config()))
	defer srv.Shutdown()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}, Timeout: 10 * time.Second}
	base := "https://" + ln.Addr().String()

	resp, err := hc.Post(base+"/v1/clients/n1/domains/example.com", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ IP string }
	json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if resp.StatusCode != 200 || m.IP != "10.0.0.0" || resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
		t.Fatalf("allocation over HTTPS: %d %+v %+v", resp.StatusCode, m, resp.TLS)
	}
	resp, err = hc.Get(base + "/v1/clients/n1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"10.0.0.0"`) {
		t.Fatalf("listing over HTTPS: %d %s", resp.StatusCode, b)
	}
	// Plain HTTP to the HTTPS port gets no answer.
	if resp, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("plain HTTP to the HTTPS port answered %s", resp.Status)
	}
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.WriteFile(to, readFile(t, from), 0o600); err != nil {
		t.Fatal(err)
	}
}
