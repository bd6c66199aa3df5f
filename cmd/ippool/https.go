package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ippool/ippool/internal/connlimit"
	"github.com/ippool/ippool/internal/httpapi"
)

// httpSetup checks the HTTP flags before anything starts: HTTPS's files
// (loaded here, so a bad one stops the start) and whether the address may
// be bound. It returns the HTTPS configuration, nil without HTTPS, and
// whether the address is loopback.
func (c *ServeCmd) httpSetup() (*httpapi.TLS, bool, error) {
	files := httpapi.TLSFiles{Cert: c.HTTPTLSCert, Key: c.HTTPTLSKey, ClientCA: c.HTTPClientCA}
	switch {
	case (files.Cert == "") != (files.Key == ""):
		return nil, false, errors.New("--http-tls-cert and --http-tls-key go together: give both to serve HTTPS, or neither")
	case files.ClientCA != "" && files.Cert == "":
		return nil, false, errors.New("--http-client-ca makes HTTPS clients present a certificate, and needs HTTPS: give --http-tls-cert and --http-tls-key with it")
	}
	loopback, err := checkHTTPBind(c.HTTPAddr, c.ACL, files.Cert != "", c.Insecure)
	if err != nil || files.Cert == "" {
		return nil, loopback, err
	}
	t, err := httpapi.LoadTLS(files)
	return t, loopback, err
}

// checkHTTPBind refuses an HTTP address other machines can reach unless
// requests need a token (--acl) and tokens cannot be read off the wire
// (HTTPS, or --insecure to accept that they can). It reports whether the
// address is loopback.
func checkHTTPBind(addr string, acl, https, insecure bool) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("--http-addr %q is not host:port: %v", addr, err)
	}
	if loopbackListenHost(host) {
		return true, nil
	}
	exposed := fmt.Sprintf("--http-addr %s is not loopback: anyone who can reach it could read and change every mapping.", addr)
	switch {
	case !acl && !https && !insecure:
		return false, fmt.Errorf("%s Add --acl (then bootstrap with `ippool acl bootstrap`) and either --http-tls-cert/--http-tls-key or, to serve plain HTTP, --insecure", exposed)
	case !acl:
		return false, fmt.Errorf("%s Add --acl (then bootstrap with `ippool acl bootstrap`)", exposed)
	case !https && !insecure:
		return false, fmt.Errorf("--http-addr %s is not loopback, and without HTTPS its ACL tokens and mappings cross the network in clear text. Add --http-tls-cert/--http-tls-key or, to serve plain HTTP, --insecure", addr)
	}
	return false, nil
}

// loopbackListenHost reports whether listening on host reaches only this
// machine. Only "localhost" counts among names: another name resolves to
// whatever DNS says, and "" and 0.0.0.0 mean every interface.
func loopbackListenHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// listenHTTP listens on the HTTP address, with HTTPS when t is not nil,
// keeping at most maxConns connections open and perIP from one address
// (connlimit, under TLS so a refusal costs no handshake). An address
// judged loopback must have been bound on loopback: "localhost" is
// resolved by the system, which could say otherwise.
func listenHTTP(addr string, loopback bool, t *httpapi.TLS, maxConns, perIP int) (net.Listener, *connlimit.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listening on the HTTP address: %w", err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); loopback && (!ok || !tcp.IP.IsLoopback()) {
		ln.Close()
		return nil, nil, fmt.Errorf("--http-addr %s was bound on %s, which is not loopback", addr, ln.Addr())
	}
	conns := connlimit.New(ln, maxConns, perIP)
	ln = conns
	if t != nil {
		ln = tls.NewListener(ln, t.Config())
	}
	return ln, conns, nil
}

// reloadOnSIGHUP reloads the HTTPS certificates and client CA on every
// SIGHUP until stop is called; a reload that fails keeps the old ones. The
// signal is taken even without HTTPS, so that `systemctl reload` never stops
// the server (SIGHUP's default action).
func reloadOnSIGHUP(log *slog.Logger, t *httpapi.TLS) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-hup:
			}
			if t == nil {
				log.Info("SIGHUP: no HTTPS certificates to reload")
				continue
			}
			if err := t.Reload(); err != nil {
				log.Error("reloading the HTTPS certificates failed; still serving the ones loaded before", "err", err)
				continue
			}
			leaf := t.Certificate()
			log.Info("reloaded the HTTPS certificates", "subject", leaf.Subject.String(), "issuer", leaf.Issuer.String(), "not_after", leaf.NotAfter)
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}

// curlHint is the start of the curl line serve prints to try the API.
func curlHint(t *httpapi.TLS) string {
	switch {
	case t == nil:
		return "curl"
	case t.ClientCertificates():
		return "curl --cacert CA.pem --cert CLIENT.pem --key CLIENT-KEY.pem"
	}
	return "curl --cacert CA.pem"
}
