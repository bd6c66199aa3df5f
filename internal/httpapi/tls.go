package httpapi

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// TLSFiles names the PEM files of HTTPS on the API.
type TLSFiles struct {
	Cert, Key string
	// ClientCA, when set, makes a client certificate it signed a condition
	// of every connection.
	ClientCA string
}

// TLS is HTTPS for the API with certificates that can be replaced while the
// server runs: Reload reads the files again, and every handshake from then on
// uses what it read, so renewing a certificate drops neither the listener nor
// an open connection.
type TLS struct {
	files TLSFiles
	// cur is the configuration handshakes use; Reload swaps it whole, so a
	// handshake never sees a new certificate with an old client CA.
	cur atomic.Pointer[tls.Config]
}

// LoadTLS reads the files, failing if any is missing or unusable.
func LoadTLS(files TLSFiles) (*TLS, error) {
	if files.Cert == "" || files.Key == "" {
		return nil, errors.New("HTTPS needs both a certificate and its key")
	}
	t := &TLS{files: files}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload reads the files again. On an error it keeps what it had, so a
// botched renewal leaves the server serving its old certificate rather than
// none.
func (t *TLS) Reload() error {
	cert, err := tls.LoadX509KeyPair(t.files.Cert, t.files.Key)
	if err != nil {
		return fmt.Errorf("loading the HTTPS certificate %s and key %s: %w", t.files.Cert, t.files.Key, err)
	}
	cfg := baseTLS()
	cfg.Certificates = []tls.Certificate{cert}
	if t.files.ClientCA != "" {
		pem, err := os.ReadFile(t.files.ClientCA)
		if err != nil {
			return fmt.Errorf("reading the HTTPS client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("the HTTPS client CA %s holds no PEM certificate", t.files.ClientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	t.cur.Store(cfg)
	return nil
}

// Certificate is the certificate handshakes use now.
func (t *TLS) Certificate() *x509.Certificate { return t.cur.Load().Certificates[0].Leaf }

// ClientCertificates reports whether clients must present a certificate.
func (t *TLS) ClientCertificates() bool { return t.files.ClientCA != "" }

// Config is the configuration to serve with (tls.NewListener); it follows
// every Reload.
func (t *TLS) Config() *tls.Config {
	cfg := baseTLS()
	// Returning the current configuration whole, rather than only its
	// certificate through GetCertificate, lets the client CA change too.
	// Sessions resumed from tickets issued before a reload are still held
	// to the new client CA: crypto/tls verifies a resumed session's chain
	// against the configuration of the handshake resuming it.
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return t.cur.Load(), nil }
	return cfg
}

func baseTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// fasthttp speaks HTTP/1.1 only.
		NextProtos: []string{"http/1.1"},
	}
}
