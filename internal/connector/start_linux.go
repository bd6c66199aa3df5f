package connector

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// platform is the connector's Linux half: listeners, flows and rules.
type platform struct {
	wg    sync.WaitGroup
	tcp   []*net.TCPListener
	udpLn []*net.UDPConn
	udp   udpState
	rules *Rules // installed by this process; nil when left to the operator
	mu    sync.Mutex
	done  chan struct{}
}

// Supported says whether this system can run the connector: Linux can.
func Supported() error { return nil }

// poolEvery is how often the pool configuration is read again: a change
// (ippool pool set) updates the guard and the nftables set within it.
const poolEvery = 2 * time.Second

func (c *Connector) start() error {
	p := &c.plat
	p.udp.flows = make(map[udpKey]*udpFlow)
	p.udp.replies = make(map[netip.AddrPort]*replySock)
	p.done = make(chan struct{})
	lc := listenConfig(c.cfg.KeepAlive)
	port := strconv.Itoa(c.cfg.Port)
	type fam struct{ tcp, udp, host string }
	fams := []fam{{"tcp4", "udp4", "127.0.0.1"}}
	if c.cfg.V6Prefix.IsValid() {
		fams = append(fams, fam{"tcp6", "udp6", "::1"})
	}
	for _, f := range fams {
		addr := net.JoinHostPort(f.host, port)
		ln, err := lc.Listen(c.ctx, f.tcp, addr)
		if err != nil {
			c.closeListeners()
			return fmt.Errorf("connector: TCP listener on %s: %w", addr, err)
		}
		p.tcp = append(p.tcp, ln.(*net.TCPListener))
		pc, err := lc.ListenPacket(c.ctx, f.udp, addr)
		if err != nil {
			c.closeListeners()
			return fmt.Errorf("connector: UDP listener on %s: %w", addr, err)
		}
		p.udpLn = append(p.udpLn, pc.(*net.UDPConn))
	}
	c.guard.refreshPool()
	if c.cfg.Rules {
		r := c.currentRules()
		if err := r.Install(); err != nil {
			_ = r.Remove()
			c.closeListeners()
			return fmt.Errorf("connector: installing rules (needs CAP_NET_ADMIN; --connector-rules=off leaves them to you): %w", err)
		}
		p.rules = &r
	}
	for _, ln := range p.tcp {
		p.wg.Add(1)
		go c.acceptTCP(ln)
	}
	for _, pc := range p.udpLn {
		p.wg.Add(1)
		go c.readUDP(pc)
	}
	go c.watchPool()
	c.log.Info("connector is carrying flows to pool addresses", "port", c.cfg.Port, "rules", c.cfg.Rules, "v6_prefix", c.cfg.V6Prefix)
	return nil
}

func (c *Connector) currentRules() Rules {
	return Rules{Port: c.cfg.Port, Mark: c.cfg.Mark, Table: c.cfg.Table, Pool: c.guard.poolRanges(), V6Prefix: c.cfg.V6Prefix}
}

// watchPool follows changes of the pool configuration.
func (c *Connector) watchPool() {
	// Faster until the pool is known: a cluster still bootstrapping has
	// none, and the rules were installed with an empty set.
	every := poolEvery
	if c.guard.poolSet.Load() == nil {
		every = poolEvery / 10
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.plat.done:
			return
		case <-t.C:
		}
		if every != poolEvery && c.guard.poolSet.Load() != nil {
			every = poolEvery
			t.Reset(every)
		}
		c.logMissingEgress()
		if !c.guard.refreshPool() || !c.cfg.Rules {
			continue
		}
		c.plat.mu.Lock()
		if c.plat.rules != nil {
			r := c.currentRules()
			if err := r.installNFT(); err != nil {
				c.log.Error("connector: updating the pool's nftables set", "err", err)
			} else {
				c.plat.rules = &r
				c.log.Info("connector: pool changed, nftables set updated", "pool", c.guard.poolSet.Load().cfg.PoolString())
			}
		}
		c.plat.mu.Unlock()
	}
}

func (c *Connector) closeListeners() {
	for _, ln := range c.plat.tcp {
		ln.Close()
	}
	for _, pc := range c.plat.udpLn {
		pc.Close()
	}
}

// close removes the rules first, so that no flow arrives at a closed port,
// then ends listeners and flows (c.ctx is already cancelled, which resets
// every flow).
func (c *Connector) close() error {
	if c.plat.done == nil {
		return nil
	}
	var errs []error
	c.plat.mu.Lock()
	select {
	case <-c.plat.done:
	default:
		close(c.plat.done)
	}
	if r := c.plat.rules; r != nil {
		if err := r.Remove(); err != nil {
			errs = append(errs, fmt.Errorf("connector: removing rules: %w", err))
		}
		c.plat.rules = nil
	}
	c.plat.mu.Unlock()
	c.closeListeners()
	ended := make(chan struct{})
	go func() { c.plat.wg.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		errs = append(errs, errors.New("connector: flows still ending after 5s"))
	}
	return errors.Join(errs...)
}
