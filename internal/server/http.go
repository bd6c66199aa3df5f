package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/ippool/ippool/internal/connlimit"
	"github.com/ippool/ippool/internal/httpapi"
)

// listenHTTP listens on the HTTP address, with HTTPS when t is not nil,
// keeping at most maxConns connections open and perIP from one address
// (connlimit, under TLS so a refusal costs no handshake). An address
// judged loopback must have been bound on loopback: "localhost" is
// resolved by the system, which could say otherwise.
func listenHTTP(addr string, loopback bool, t *httpapi.TLS, maxConns, perIP int) (net.Listener, *connlimit.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, fmt.Errorf("--http-addr %s is in use by another program (another ippool serve?): stop it, or give this server another --http-addr: %w", addr, err)
		}
		return nil, nil, fmt.Errorf("listening on --http-addr %s: %w", addr, err)
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
