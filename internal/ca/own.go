package ca

import (
	"os"
	"path/filepath"
	"time"
)

// The CA a lone server makes for itself lives in its data dir's
// DataDirSubdir, with that server's own certificate: the whole of what a
// server starting a new cluster alone needs, and what `ippool tls issue
// --ca-dir DATA-DIR` issues further servers' certificates from.
const (
	DataDirSubdir = "tls"
	ownCertFile   = "server.pem"
	ownKeyFile    = "server-key.pem"
	// Nothing renews a server's own CA or its certificate, so they last
	// as long as a server plausibly runs.
	ownValidFor = 10 * 365 * 24 * time.Hour
)

// OwnFiles names the files of the CA a server made in dataDir (MakeOwn).
func OwnFiles(dataDir string) Files {
	d := filepath.Join(dataDir, DataDirSubdir)
	return Files{CA: filepath.Join(d, caCertFile), Cert: filepath.Join(d, ownCertFile), Key: filepath.Join(d, ownKeyFile)}
}

// MakeOwn makes a CA and a certificate for the server named name in
// dataDir's DataDirSubdir. It writes them into a temporary directory and
// renames it into place, so a crash leaves either no such directory or a
// whole one.
func MakeOwn(dataDir, name string) error {
	if old, err := filepath.Glob(filepath.Join(dataDir, ".tls-*")); err == nil {
		for _, d := range old {
			os.RemoveAll(d)
		}
	}
	tmp, err := os.MkdirTemp(dataDir, ".tls-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	ca, caKey, err := newCA(ownValidFor)
	if err != nil {
		return err
	}
	cert, key, err := ca.issue(name, ownValidFor)
	if err != nil {
		return err
	}
	if _, err := writeNewFiles([]newFile{{filepath.Join(tmp, caCertFile), ca.certPEM}, {filepath.Join(tmp, caKeyFile), caKey},
		{filepath.Join(tmp, ownCertFile), cert}, {filepath.Join(tmp, ownKeyFile), key}}); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dataDir, DataDirSubdir)); err != nil {
		return err
	}
	return syncDir(dataDir)
}

// createSynced writes a file that must not exist yet, owner-only, synced.
func createSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// syncDir makes a rename or a new file in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
