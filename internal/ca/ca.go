// Package ca is the cluster's certificate authority tooling: a CA of the
// cluster's own (ECDSA P-256), server certificates that serve as both TLS
// server and client for mutual TLS, the directories `ippool tls init` and
// `tls issue` write, the CA a lone server makes in its data dir, and
// loading a server's files into a tls.Config. Files are owner-only and never
// overwritten.
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
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

// The files of a CA directory (`ippool tls init`'s DIR/ca, a data dir's tls)
// and of a server's certificate directory (`tls init`'s DIR/server-N, `tls
// issue`'s --out), which holds a copy of the CA certificate so that one
// directory is all a new server needs.
const (
	caCertFile     = "ca.pem"
	caKeyFile      = "ca-key.pem"
	serverCertFile = "cert.pem"
	serverKeyFile  = "key.pem"
)

// Files names a server's PEM files.
type Files struct {
	CA, Cert, Key string
}

// Enabled reports whether any file is set.
func (f Files) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Load builds a tls.Config for mutual TLS: the server requires a client
// certificate signed by the CA, and the client checks the server's.
func (f Files) Load() (*tls.Config, error) {
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

// ServerFiles names the files of a server certificate directory, as Init
// and Issue write it.
func ServerFiles(dir string) Files {
	return Files{CA: filepath.Join(dir, caCertFile), Cert: filepath.Join(dir, serverCertFile), Key: filepath.Join(dir, serverKeyFile)}
}

// certAuthority is a CA that can sign server certificates.
type certAuthority struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
}

// newCA makes a CA and returns it with its key in PEM.
func newCA(validFor time.Duration) (*certAuthority, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "ippool cluster CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	ca := &certAuthority{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}
	return ca, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// loadCA reads dir/ca.pem and dir/ca-key.pem.
func loadCA(dir string) (*certAuthority, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, caCertFile))
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate", filepath.Join(dir, caCertFile))
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, caCertFile), err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", filepath.Join(dir, caCertFile))
	}
	keyPath := filepath.Join(dir, caKeyFile)
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	// A key from another CA would sign certificates no server accepts.
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s is not the key of %s", keyPath, filepath.Join(dir, caCertFile))
	}
	return &certAuthority{cert: cert, certPEM: certPEM, key: key}, nil
}

// parseKey accepts the key encodings openssl and Go write, so a CA made
// elsewhere can issue too.
func parseKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM private key")
	}
	var key any
	var err error
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, err
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", key)
	}
	return s, nil
}

// issue makes a server certificate, which serves as both TLS server and
// client, as mutual TLS needs. It never outlives the CA: a server would
// refuse it then anyway.
func (ca *certAuthority) issue(name string, validFor time.Duration, extra ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	notAfter := now.Add(validFor)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{ServerName, "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	// Extra names let the same certificate serve HTTPS on the API too,
	// where clients check the host they dialled; servers check each other
	// by ServerName alone.
	for _, e := range extra {
		if ip := net.ParseIP(e); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, e)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), nil
}

// newFile is a file to write that must not exist yet.
type newFile struct {
	path string
	data []byte
}

// writeNewFiles writes files owner-only, each synced, refusing before
// writing anything if one exists: certificates and keys are never
// overwritten. Missing directories are made 0700.
func writeNewFiles(files []newFile) ([]string, error) {
	for _, f := range files {
		if _, err := os.Lstat(f.path); err == nil {
			return nil, fmt.Errorf("%s exists; certificates and keys are never overwritten, so choose another directory or move it aside", f.path)
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	var written []string
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
			return written, err
		}
		if err := createSynced(f.path, f.data); err != nil {
			return written, err
		}
		written = append(written, f.path)
	}
	return written, nil
}

// Init makes a new cluster CA and n server certificates under dir:
// dir/ca/{ca.pem,ca-key.pem}, to keep offline (the key is needed only to
// issue more certificates, with Issue), and dir/server-N/{ca.pem,cert.pem,
// key.pem}, the whole directory to copy to server N. Existing files are never
// overwritten.
//
// extra are host names and IP addresses the server certificates also
// carry (see issue).
func Init(dir string, n int, validFor time.Duration, extra ...string) ([]string, error) {
	ca, caKey, err := newCA(validFor)
	if err != nil {
		return nil, err
	}
	caDir := filepath.Join(dir, "ca")
	files := []newFile{{filepath.Join(caDir, caCertFile), ca.certPEM}, {filepath.Join(caDir, caKeyFile), caKey}}
	for i := 1; i <= n; i++ {
		cert, key, err := ca.issue(fmt.Sprintf("ippool server %d", i), validFor, extra...)
		if err != nil {
			return nil, err
		}
		sd := filepath.Join(dir, fmt.Sprintf("server-%d", i))
		files = append(files, newFile{filepath.Join(sd, caCertFile), ca.certPEM},
			newFile{filepath.Join(sd, serverCertFile), cert}, newFile{filepath.Join(sd, serverKeyFile), key})
	}
	return writeNewFiles(files)
}

// Issue signs a new server certificate with the CA found at from and
// writes out/{ca.pem,cert.pem,key.pem}: out is the whole directory to copy
// to the new server. from is a directory holding ca.pem and ca-key.pem
// (`ippool tls init`'s DIR/ca), `tls init`'s DIR itself, or the data dir of a
// server that made its own CA (its tls subdirectory).
func Issue(from, out string, validFor time.Duration, extra ...string) ([]string, error) {
	caDir, err := findCADir(from)
	if err != nil {
		return nil, err
	}
	ca, err := loadCA(caDir)
	if err != nil {
		return nil, fmt.Errorf("the CA in %s: %w", caDir, err)
	}
	if time.Now().After(ca.cert.NotAfter) {
		return nil, fmt.Errorf("the CA in %s expired on %s", caDir, ca.cert.NotAfter.Format(time.DateOnly))
	}
	cert, key, err := ca.issue("ippool server", validFor, extra...)
	if err != nil {
		return nil, err
	}
	return writeNewFiles([]newFile{{filepath.Join(out, caCertFile), ca.certPEM},
		{filepath.Join(out, serverCertFile), cert}, {filepath.Join(out, serverKeyFile), key}})
}

func findCADir(from string) (string, error) {
	for _, d := range []string{from, filepath.Join(from, DataDirSubdir), filepath.Join(from, "ca")} {
		if _, err := os.Stat(filepath.Join(d, caKeyFile)); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no CA key (%s) in %s, %s or %s: give the directory holding ca.pem and ca-key.pem (`ippool tls init`'s DIR/ca), or the data dir of a server that made its own CA",
		caKeyFile, from, filepath.Join(from, DataDirSubdir), filepath.Join(from, "ca"))
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
