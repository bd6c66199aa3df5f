package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// forwarder is a follower's end: one connection to the current leader,
// redialed when the leader changes or the connection fails.
type forwarder struct {
	m      *mux
	mu     sync.Mutex
	conn   *fwdConn
	closed bool
}

type fwdConn struct {
	addr string
	c    net.Conn

	wmu sync.Mutex
	bw  *bufio.Writer

	mu      sync.Mutex
	seq     uint64
	pending map[uint64]*fwdCall
	err     error // set once the connection is dead
}

// fwdCall is a batch waiting for its answer. done runs once: with the
// answer body, with errNoAnswer when none came in time, or with the error
// that broke the connection.
type fwdCall struct {
	done  func(body []byte, err error)
	timer *time.Timer
}

// errNoAnswer: the connection stayed up but the leader did not answer in
// time (it may be stopped, or cut off from its quorum).
var errNoAnswer = errors.New("the leader did not answer the forwarded batch in time")

// get returns a live connection to addr, dialing one if needed; a
// connection to another address (a former leader) is closed.
func (f *forwarder) get(addr string, timeout time.Duration) (*fwdConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errShutdown
	}
	if fc := f.conn; fc != nil {
		if fc.addr == addr && fc.alive() {
			return fc, nil
		}
		fc.fail(errors.New("the leader changed"))
		f.conn = nil
	}
	c, err := f.m.dial(addr, protoForward, timeout)
	if err != nil {
		return nil, err
	}
	fc := &fwdConn{addr: addr, c: c, bw: bufio.NewWriterSize(c, 64<<10), pending: map[uint64]*fwdCall{}}
	go fc.readAnswers()
	f.conn = fc
	return fc, nil
}

// live returns the connection to addr if one is up, without dialing.
func (f *forwarder) live(addr string) *fwdConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fc := f.conn; fc != nil && fc.addr == addr && fc.alive() {
		return fc
	}
	return nil
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	if f.conn != nil {
		f.conn.fail(errShutdown)
		f.conn = nil
	}
}

func (fc *fwdConn) alive() bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.err == nil
}

// fail closes the connection and fails every batch waiting on it; their
// request IDs make the retry that follows safe.
func (fc *fwdConn) fail(err error) {
	fc.mu.Lock()
	if fc.err != nil {
		fc.mu.Unlock()
		return
	}
	fc.err = err
	fc.c.Close()
	calls := fc.pending
	fc.pending = nil
	fc.mu.Unlock()
	for _, call := range calls {
		call.timer.Stop()
		call.done(nil, err)
	}
}

// take removes the call waiting for seq, if it still waits.
func (fc *fwdConn) take(seq uint64) *fwdCall {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	call := fc.pending[seq]
	delete(fc.pending, seq)
	return call
}

func (fc *fwdConn) readAnswers() {
	br := bufio.NewReaderSize(fc.c, 64<<10)
	for {
		seq, body, err := readFrame(br, maxAnswer)
		if err != nil {
			fc.fail(fmt.Errorf("forwarding connection to %s: %w", fc.addr, err))
			return
		}
		if call := fc.take(seq); call != nil {
			call.timer.Stop()
			call.done(body, nil)
		}
	}
}

// start sends one entry and returns; done gets the leader's answer body,
// on the goroutine that reads answers, which must not block.
func (fc *fwdConn) start(entry []byte, timeout time.Duration, done func(body []byte, err error)) {
	fc.mu.Lock()
	if fc.err != nil {
		err := fc.err
		fc.mu.Unlock()
		done(nil, err)
		return
	}
	fc.seq++
	seq := fc.seq
	call := &fwdCall{done: done}
	call.timer = time.AfterFunc(timeout, func() {
		if fc.take(seq) != nil {
			done(nil, errNoAnswer)
		}
	})
	fc.pending[seq] = call
	fc.mu.Unlock()

	fc.wmu.Lock()
	fc.c.SetWriteDeadline(time.Now().Add(timeout))
	err := writeFrame(fc.bw, seq, entry)
	fc.wmu.Unlock()
	if err != nil {
		fc.fail(err)
	}
}

// call sends one entry and waits for the leader's answer body.
func (fc *fwdConn) call(ctx context.Context, entry []byte) ([]byte, error) {
	type answer struct {
		body []byte
		err  error
	}
	ch := make(chan answer, 1)
	fc.start(entry, timeLeft(ctx, 2*time.Second), func(body []byte, err error) { ch <- answer{body, err} })
	a := <-ch
	return a.body, a.err
}
