package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ippool/ippool/internal/testcerts"
)

func TestCheckHTTPBind(t *testing.T) {
	for _, tc := range []struct {
		addr                 string
		acl, https, insecure bool
		loopback             bool
		wantErr, wantErrAlso string // "" for no error
		wantErrNot           string
	}{
		{addr: "127.0.0.1:7480", loopback: true},
		{addr: "127.9.8.7:7480", loopback: true},
		{addr: "localhost:7480", loopback: true},
		{addr: "LocalHost:0", loopback: true},
		{addr: "[::1]:7480", loopback: true},
		{addr: "0.0.0.0:7480", wantErr: "--http-addr 0.0.0.0:7480 is not loopback", wantErrAlso: "Add --acl (then bootstrap with `ippool acl bootstrap`) and either --http-tls-cert/--http-tls-key or, to serve plain HTTP, --insecure"},
		{addr: ":7480", wantErr: "--http-addr :7480 is not loopback", wantErrAlso: "--acl"},
		{addr: "[::]:7480", wantErr: "is not loopback", wantErrAlso: "--acl"},
		{addr: "10.0.0.1:7480", wantErr: "is not loopback", wantErrAlso: "--acl"},
		{addr: "ippool.example:7480", wantErr: "is not loopback", wantErrAlso: "--acl"},
		{addr: "localhost.example:7480", wantErr: "is not loopback", wantErrAlso: "--acl"},
		{addr: "0.0.0.0:7480", https: true, wantErr: "Add --acl", wantErrNot: "--insecure"},
		{addr: "0.0.0.0:7480", insecure: true, wantErr: "Add --acl", wantErrNot: "--insecure"},
		{addr: "0.0.0.0:7480", acl: true, wantErr: "clear text", wantErrAlso: "Add --http-tls-cert/--http-tls-key or, to serve plain HTTP, --insecure"},
		{addr: "0.0.0.0:7480", acl: true, https: true},
		{addr: "[::]:7480", acl: true, insecure: true},
		{addr: "0.0.0.0", wantErr: "is not host:port"},
	} {
		loopback, err := checkHTTPBind(tc.addr, tc.acl, tc.https, tc.insecure)
		name := tc.addr
		if tc.acl {
			name += " --acl"
		}
		if tc.https {
			name += " https"
		}
		if tc.insecure {
			name += " --insecure"
		}
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tc.wantErr != "" && err == nil:
			t.Errorf("%s: no error, want one saying %q", name, tc.wantErr)
		case err != nil && (!strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.wantErrAlso)):
			t.Errorf("%s: %v; want it to say %q and %q", name, err, tc.wantErr, tc.wantErrAlso)
		case err != nil && tc.wantErrNot != "" && strings.Contains(err.Error(), tc.wantErrNot):
			t.Errorf("%s: %v; asks for %s, which is there", name, err, tc.wantErrNot)
		case err == nil && loopback != tc.loopback:
			t.Errorf("%s: loopback %v, want %v", name, loopback, tc.loopback)
		}
	}
}

func TestHTTPSetupRefusesHalfAConfiguration(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "ca")
	srv := ca.Server(t, dir, "server", "127.0.0.1")
	for _, tc := range []struct {
		name          string
		cert, key, ca string
		want          string
	}{
		{"cert without key", srv.CertFile, "", "", "--http-tls-cert and --http-tls-key go together"},
		{"key without cert", "", srv.KeyFile, "", "--http-tls-cert and --http-tls-key go together"},
		{"client CA without HTTPS", "", "", ca.CertFile, "--http-client-ca makes HTTPS clients present a certificate, and needs HTTPS"},
		{"missing cert", filepath.Join(dir, "nope.pem"), srv.KeyFile, "", "nope.pem"},
		{"key of another cert", srv.CertFile, ca.Server(t, dir, "other", "127.0.0.1").KeyFile, "", "private key does not match"},
		{"client CA not PEM", srv.CertFile, srv.KeyFile, srv.KeyFile, "holds no PEM certificate"},
	} {
		c := &ServeCmd{HTTPAddr: "127.0.0.1:7480", HTTPTLSCert: tc.cert, HTTPTLSKey: tc.key, HTTPClientCA: tc.ca}
		if _, _, err := c.httpSetup(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	c := &ServeCmd{HTTPAddr: "127.0.0.1:7480", HTTPTLSCert: srv.CertFile, HTTPTLSKey: srv.KeyFile, HTTPClientCA: ca.CertFile}
	tlsCfg, loopback, err := c.httpSetup()
	if err != nil || tlsCfg == nil || !loopback || !tlsCfg.ClientCertificates() {
		t.Fatalf("a whole configuration: %v %v %v", tlsCfg, loopback, err)
	}
	// The bind rule is checked before the files are read.
	c = &ServeCmd{HTTPAddr: "0.0.0.0:7480", HTTPTLSCert: filepath.Join(dir, "nope.pem"), HTTPTLSKey: srv.KeyFile}
	if _, _, err := c.httpSetup(); err == nil || !strings.Contains(err.Error(), "Add --acl") {
		t.Errorf("0.0.0.0 without --acl: %v", err)
	}
}

func TestHTTPSConfig(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "ca")
	cl := ca.Client(t, dir, "client")
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not PEM"), 0o600)

	if cfg, err := (&CLI{}).httpsConfig(); cfg != nil || err != nil {
		t.Errorf("no flags: %v %v, want nil, nil (the system's roots)", cfg, err)
	}
	cfg, err := (&CLI{CACert: ca.CertFile, ClientCert: cl.CertFile, ClientKey: cl.KeyFile}).httpsConfig()
	if err != nil || cfg.RootCAs == nil || !cfg.RootCAs.Equal(ca.Pool()) || len(cfg.Certificates) != 1 {
		t.Errorf("every flag: %+v %v", cfg, err)
	}
	for _, tc := range []struct {
		name string
		cli  CLI
		want string
	}{
		{"client cert without key", CLI{ClientCert: cl.CertFile}, "--client-cert and --client-key go together"},
		{"client key without cert", CLI{CACert: ca.CertFile, ClientKey: cl.KeyFile}, "--client-cert and --client-key go together"},
		{"missing CA", CLI{CACert: filepath.Join(dir, "nope.pem")}, "--ca-cert: open " + filepath.Join(dir, "nope.pem")},
		{"CA not PEM", CLI{CACert: garbage}, "--ca-cert " + garbage + " holds no PEM certificate"},
		{"client cert not PEM", CLI{ClientCert: garbage, ClientKey: cl.KeyFile}, "--client-cert/--client-key: "},
	} {
		if _, err := tc.cli.httpsConfig(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}
