//go:build !linux

package connector

import (
	"errors"
	"runtime"
)

// platform is empty where there is no TPROXY.
type platform struct{}

// Supported says why this system cannot run the connector.
func Supported() error {
	return errors.New("the connector needs Linux (TPROXY and IP_TRANSPARENT sockets); this is " + runtime.GOOS + ": run ippool serve without --connector")
}

func (c *Connector) start() error { return Supported() }

func (c *Connector) close() error { return nil }

// Install fails where there is no nftables.
func (r Rules) Install() error { return errors.New("connector rules need Linux") }

// Remove has nothing to remove where there is no nftables.
func (r Rules) Remove() error { return nil }
