package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ServerName is the name every server certificate carries and every server
// checks, as Consul checks server.<dc>.consul: membership is proven by the CA's
// signature, not by the address a peer happens to dial from.
const ServerName = "server.ippool"

// TLSFiles names a server's PEM files.
type TLSFiles struct {
	CA, Cert, Key string
}

// Enabled reports whether any file is set.
func (f TLSFiles) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Load builds a tls.Config for mutual TLS: the server requires a client
// certificate signed by the CA, and the client checks the server's.
func (f TLSFiles) Load() (*tls.Config, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, fmt.Errorf("TLS needs all of --tls-ca, --tls-cert and --tls-key; got ca=%q cert=%q key=%q", f.CA, f.Cert, f.Key)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no PEM certificate", f.CA)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("loading the server certificate: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ServerName:   ServerName,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// InitTLS writes a new cluster CA and n server certificates into dir:
// ca.pem, ca-key.pem, server-1.pem, server-1-key.pem, ... Each server
// certificate serves as both TLS server and client, as mutual TLS needs.
// Existing files are not overwritten.
func InitTLS(dir string, n int, validFor time.Duration) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "ippool cluster CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	var written []string
	write := func(name, typ string, der []byte, mode os.FileMode) error {
		p := filepath.Join(dir, name)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		defer f.Close()
		written = append(written, p)
		return pem.Encode(f, &pem.Block{Type: typ, Bytes: der})
	}
	keyDER, _ := x509.MarshalECPrivateKey(caKey)
	if err := write("ca.pem", "CERTIFICATE", caDER, 0o644); err != nil {
		return written, err
	}
	if err := write("ca-key.pem", "EC PRIVATE KEY", keyDER, 0o600); err != nil {
		return written, err
	}
	for i := 1; i <= n; i++ {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return written, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: fmt.Sprintf("ippool server %d", i)},
			DNSNames:     []string{ServerName, "localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(validFor),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return written, err
		}
		kd, _ := x509.MarshalECPrivateKey(key)
		if err := write(fmt.Sprintf("server-%d.pem", i), "CERTIFICATE", der, 0o644); err != nil {
			return written, err
		}
		if err := write(fmt.Sprintf("server-%d-key.pem", i), "EC PRIVATE KEY", kd, 0o600); err != nil {
			return written, err
		}
	}
	return written, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
