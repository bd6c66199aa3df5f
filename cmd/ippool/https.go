package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

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
