package cluster

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/ippool/ippool/pool"
)

// serveForward answers one follower's forwarding connection. A batch
// joins this leader's batcher straight from the reading goroutine, and the
// goroutine that commits the entry writes the answer: under load every
// goroutine hand-off on this path waits for a CPU, and most writes take it.
//
// That goroutine writing to the connection cannot stall the leader: a
// follower has at most forwardBatchSlots batches outstanding, so answers
// never fill the socket buffer of a follower that reads; the write
// deadline bounds one that does not.
func (n *Node) serveForward(c net.Conn) {
	if !n.fwdConns.add(c) {
		c.Close()
		return
	}
	defer n.fwdConns.remove(c)
	br := bufio.NewReaderSize(c, 64<<10)
	bw := bufio.NewWriterSize(c, 16<<10)
	var wmu sync.Mutex
	// A follower dials only to send a batch, so the first frame comes at
	// once; after it the stream may idle between writes, for a while.
	idle := n.cfg.HandshakeTimeout
	for {
		c.SetReadDeadline(time.Now().Add(idle))
		idle = n.cfg.IdleTimeout
		seq, body, err := readFrame(br, maxApplyBody)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				n.log.Debug("forwarding connection closed", "remote", c.RemoteAddr(), "err", err)
			}
			return
		}
		answer := func(results []pool.Result, err error) {
			b := encodeForwardAnswer(results, err)
			wmu.Lock()
			defer wmu.Unlock()
			c.SetWriteDeadline(time.Now().Add(n.cfg.WriteTimeout))
			if err := writeFrame(bw, seq, b); err != nil {
				c.Close()
			}
		}
		// Refuse garbage here, before it costs a log entry on every server.
		e, err := pool.DecodeEntry(body)
		if err == nil && !n.IsLeader() {
			err = errNotLeader
		}
		if err != nil {
			answer(nil, err)
			continue
		}
		// Forwarded ops join the leader's own batches, so that writes
		// arriving through every server share log entries.
		p := &proposal{ops: e.Ops, deliver: func(r proposalResult) { answer(r.results, r.err) }}
		select {
		case n.batcher.in <- p:
		case <-n.stop:
			return
		}
	}
}

// connSet tracks open connections so that shutdown can close them.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
}
