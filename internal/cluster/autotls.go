package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ippool/ippool/internal/ca"
)

// The cluster port is never plain TCP unless the operator says so
// (--insecure): loopback is no boundary against other local users. A server
// given no TLS files that starts a new cluster alone makes its own CA in its
// data dir and keeps using it; more servers join it with certificates issued
// from that CA (`ippool tls issue --ca-dir DATA-DIR`).

// autoTLSDir is the data dir's subdirectory holding the CA a server made
// for itself, with that server's own certificate.
const autoTLSDir = ca.DataDirSubdir

func hasAutoTLS(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, autoTLSDir))
	return err == nil
}

// joinsOthers reports whether the server is to form or join a cluster with
// other servers, which a CA of its own cannot admit.
func (c *Config) joinsOthers() bool {
	if c.BootstrapExpect > 1 {
		return true
	}
	for _, a := range c.Join {
		if a != c.ClusterAddr {
			return true
		}
	}
	return false
}

// checkTLS refuses, before anything touches the data dir, a server that
// would talk to others with neither TLS nor --insecure.
func (c *Config) checkTLS() error {
	if c.TLS != nil || c.Network != nil || c.Insecure || !c.joinsOthers() || hasAutoTLS(c.DataDir) {
		return nil
	}
	return errors.New("this server is to join other servers (--join or --bootstrap-expect above 1), but the cluster port needs mutual TLS and no TLS files were given. " +
		"Give it a certificate from the cluster's CA: on the first server run `ippool tls issue --ca-dir FIRST-SERVER-DATA-DIR --out DIR` " +
		"(or make a CA and a certificate for every server beforehand with `ippool tls init --dir DIR --servers N`, which writes DIR/server-N), " +
		"copy that directory here and start with --tls-ca DIR/ca.pem --tls-cert DIR/cert.pem --tls-key DIR/key.pem. " +
		"Or give --insecure to run plain TCP between servers, which lets anyone who reaches the cluster port join, vote and write")
}

// setupTLS picks the cluster port's security once the data dir is locked:
// the TLS files given; else the data dir's own CA if it has one; else plain
// TCP with Insecure; else a CA made now. A CA once made is kept even with
// Insecure: the servers holding certificates from it could not talk to
// this one otherwise, and --insecure also serves to allow plain HTTP on the
// API, which must not quietly turn the cluster port plain too.
func (n *Node) setupTLS() (string, error) {
	hasCA := hasAutoTLS(n.cfg.DataDir)
	switch {
	case n.cfg.Network != nil:
		return "off: " + n.cfg.Network.Name + " identity", nil
	case n.cfg.TLS != nil:
		return "mutual TLS (given files)", nil
	case n.cfg.Insecure && !hasCA:
		return "off (insecure)", nil
	}
	if !hasCA {
		if err := ca.MakeOwn(n.cfg.DataDir, "ippool server "+n.cfg.ID); err != nil {
			return "", fmt.Errorf("making this server's cluster CA in %s: %w", filepath.Join(n.cfg.DataDir, autoTLSDir), err)
		}
		n.log.Info(fmt.Sprintf("made a cluster CA for this server; give each further server a certificate from `ippool tls issue --ca-dir %s --out DIR`", n.cfg.DataDir),
			"dir", filepath.Join(n.cfg.DataDir, autoTLSDir))
	}
	conf, err := ca.OwnFiles(n.cfg.DataDir).Load()
	if err != nil {
		return "", fmt.Errorf("this server's cluster CA in %s: %w", filepath.Join(n.cfg.DataDir, autoTLSDir), err)
	}
	n.cfg.TLS = conf
	return "mutual TLS (data dir CA)", nil
}
