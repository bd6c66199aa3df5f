package ca

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/testcerts"
)

func TestInitTLSKeepsTheCAKeyApartAndNeverOverwrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	written, err := Init(dir, 2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var rel []string
	for _, p := range written {
		r, _ := filepath.Rel(dir, p)
		rel = append(rel, r)
	}
	want := "ca/ca.pem ca/ca-key.pem server-1/ca.pem server-1/cert.pem server-1/key.pem server-2/ca.pem server-2/cert.pem server-2/key.pem"
	if got := strings.Join(rel, " "); got != want {
		t.Fatalf("InitTLS wrote %s, want %s", got, want)
	}
	testcerts.OwnerOnly(t, dir)
	for _, s := range []string{"server-1", "server-2"} {
		if err := testcerts.VerifiesServer(t, filepath.Join(dir, "ca", "ca.pem"), filepath.Join(dir, s, "cert.pem"), ServerName); err != nil {
			t.Errorf("%s's certificate: %v", s, err)
		}
		if _, err := ServerFiles(filepath.Join(dir, s)).Load(); err != nil {
			t.Errorf("%s's directory does not load: %v", s, err)
		}
	}
	before, _ := os.ReadFile(filepath.Join(dir, "ca", "ca-key.pem"))
	if _, err := Init(dir, 2, time.Hour); err == nil || !strings.Contains(err.Error(), "never overwritten") {
		t.Fatalf("a second InitTLS into the same dir: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca", "ca-key.pem")); !bytes.Equal(before, after) {
		t.Fatal("the second InitTLS changed the CA key")
	}
}

func TestIssueTLSFromEveryKindOfCADir(t *testing.T) {
	root := t.TempDir()
	initDir := filepath.Join(root, "init")
	if _, err := Init(initDir, 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(root, "data")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := MakeOwn(dataDir, "ippool server s1"); err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct{ from, ca string }{
		{filepath.Join(initDir, "ca"), filepath.Join(initDir, "ca", "ca.pem")},
		{initDir, filepath.Join(initDir, "ca", "ca.pem")},
		{dataDir, filepath.Join(dataDir, "tls", "ca.pem")},
		{filepath.Join(dataDir, "tls"), filepath.Join(dataDir, "tls", "ca.pem")},
	} {
		out := filepath.Join(root, "out", string(rune('a'+i)))
		if _, err := Issue(c.from, out, time.Hour); err != nil {
			t.Fatalf("issuing from %s: %v", c.from, err)
		}
		testcerts.OwnerOnly(t, out)
		if err := testcerts.VerifiesServer(t, c.ca, filepath.Join(out, "cert.pem"), ServerName); err != nil {
			t.Errorf("issued from %s: %v", c.from, err)
		}
		caCopy, _ := os.ReadFile(filepath.Join(out, "ca.pem"))
		caOrig, _ := os.ReadFile(c.ca)
		if !bytes.Equal(caCopy, caOrig) {
			t.Errorf("issued from %s: out/ca.pem is not the CA's certificate", c.from)
		}
		if _, err := os.Stat(filepath.Join(out, "ca-key.pem")); err == nil {
			t.Errorf("issued from %s: the CA key was copied out", c.from)
		}
		if _, err := Issue(c.from, out, time.Hour); err == nil || !strings.Contains(err.Error(), "never overwritten") {
			t.Errorf("issuing into a used dir: %v", err)
		}
	}
	if _, err := Issue(root, filepath.Join(root, "x"), time.Hour); err == nil || !strings.Contains(err.Error(), "no CA key") {
		t.Fatalf("issuing from a dir without a CA: %v", err)
	}
}

// Extra names and addresses go into every server certificate beside the
// name servers check each other by.
func TestCertificatesCarryExtraNames(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, 1, time.Hour, "api.example", "10.0.0.5"); err != nil {
		t.Fatal(err)
	}
	conf, err := ServerFiles(filepath.Join(dir, "server-1")).Load()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(conf.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{ServerName, "api.example", "10.0.0.5", "127.0.0.1"} {
		if err := leaf.VerifyHostname(host); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
}
