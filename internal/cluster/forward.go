package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/ippool/ippool/pool"
)

// A follower streams the write batches it forwards to the leader over one
// long-lived cluster connection (protocol byte 'F') instead of one HTTP
// request each: under load most writes arrive at followers, and an HTTP/JSON
// exchange per batch cost as much CPU as the leader's whole Raft round.
//
// Both directions carry frames: a 4-byte big-endian length, then an 8-byte
// sequence number the answer repeats, then the body. A request's body is a
// log entry as pool.EncodeEntry writes it (forwardEntry); an answer's body is
// encodeForwardAnswer's. Answers come back in any order.
const (
	frameHeader = 4 + 8
	// maxAnswer bounds an answer frame: a result is at most a few bytes
	// plus an error message.
	maxAnswer = 64 << 20
)

func writeFrame(w *bufio.Writer, seq uint64, body []byte) error {
	var h [frameHeader]byte
	binary.BigEndian.PutUint32(h[:4], uint32(8+len(body)))
	binary.BigEndian.PutUint64(h[4:], seq)
	w.Write(h[:])
	w.Write(body)
	return w.Flush()
}

// readFrame reads one frame whose body is at most limit bytes. The body's
// buffer grows with the bytes that arrive, doubling from frameChunk, so a
// length announced and never sent costs nothing: a frame costs at most
// twice what its sender has sent.
func readFrame(r *bufio.Reader, limit int) (uint64, []byte, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(h[:4]))
	if n < 8 || n-8 > limit {
		return 0, nil, fmt.Errorf("forwarding frame of %d bytes is out of bounds", n)
	}
	size := n - 8
	body := make([]byte, 0, min(size, frameChunk))
	for len(body) < size {
		if len(body) == cap(body) {
			body = slices.Grow(body, min(size-len(body), len(body)))
		}
		m, err := io.ReadFull(r, body[len(body):min(size, cap(body))])
		body = body[:len(body)+m]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
	}
	return binary.BigEndian.Uint64(h[4:]), body, nil
}

// frameChunk is the most of a frame's body readFrame allocates before its
// bytes arrive; most frames fit.
const frameChunk = 64 << 10

// Answer bodies start with one of these.
const (
	answerResults byte = 1
	answerError   byte = 2
)

// Flags of one result in an answer.
const (
	resultAddr   byte = 1 << 0
	resultErr    byte = 1 << 1
	resultReused byte = 1 << 2
)

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// encodeForwardAnswer renders the leader's answer to one forwarded batch:
// a result per op, or the error that failed the whole batch.
func encodeForwardAnswer(results []pool.Result, err error) []byte {
	if err != nil {
		re := asRPCError(err)
		b := []byte{answerError, 0}
		if re.Retry {
			b[1] = 1
		}
		b = appendString(b, string(re.Code))
		return appendString(b, re.Message)
	}
	b := make([]byte, 0, 2+8*len(results))
	b = append(b, answerResults)
	b = binary.AppendUvarint(b, uint64(len(results)))
	for _, r := range results {
		var flags byte
		if r.Addr.Is4() {
			flags |= resultAddr
		}
		if r.Err != nil {
			flags |= resultErr
		}
		if r.Reused {
			flags |= resultReused
		}
		b = append(b, flags)
		if flags&resultAddr != 0 {
			a := r.Addr.As4()
			b = append(b, a[:]...)
		}
		b = binary.AppendUvarint(b, uint64(max(r.Count, 0)))
		if flags&resultErr != 0 {
			b = appendString(b, string(pool.CodeOf(r.Err)))
			b = appendString(b, r.Err.Error())
		}
	}
	return b
}

var errMalformedAnswer = errors.New("malformed forwarding answer from the leader")

// answerDecoder reads an answer body, refusing anything malformed: a
// leader's bytes are trusted no more than a client's. The first error
// sticks; later reads return zero values.
type answerDecoder struct {
	b   []byte
	err error
}

// take returns the next n bytes.
func (d *answerDecoder) take(n uint64) []byte {
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errMalformedAnswer
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *answerDecoder) byte() byte {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *answerDecoder) uvarint(limit uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > limit {
		d.err = errMalformedAnswer
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *answerDecoder) string() string { return string(d.take(d.uvarint(maxAnswer))) }

// decodeForwardAnswer returns the results of a batch of want ops, or the
// leader's error for the batch (an *rpcError).
func decodeForwardAnswer(body []byte, want int) ([]pool.Result, error) {
	d := &answerDecoder{b: body}
	switch d.byte() {
	case answerError:
		re := &rpcError{Retry: d.byte() == 1}
		re.Code = pool.Code(d.string())
		re.Message = d.string()
		if d.err != nil || len(d.b) != 0 {
			return nil, errMalformedAnswer
		}
		return nil, re
	case answerResults:
	default:
		return nil, errMalformedAnswer
	}
	n := d.uvarint(uint64(want))
	if d.err == nil && n != uint64(want) {
		return nil, fmt.Errorf("the leader answered %d results for %d ops", n, want)
	}
	out := make([]pool.Result, n)
	for i := 0; i < len(out) && d.err == nil; i++ {
		flags := d.byte()
		if flags&^(resultAddr|resultErr|resultReused) != 0 {
			d.err = errMalformedAnswer
		}
		if flags&resultAddr != 0 {
			if a := d.take(4); a != nil {
				out[i].Addr = netip.AddrFrom4([4]byte(a))
			}
		}
		out[i].Count = int(d.uvarint(1 << 31))
		out[i].Reused = flags&resultReused != 0
		if flags&resultErr != 0 {
			code := pool.Code(d.string())
			out[i].Err = &pool.Error{Code: code, Msg: d.string()}
		}
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, errMalformedAnswer
	}
	return out, nil
}

// asRPCError is how an error travels back to the server that forwarded.
func asRPCError(err error) *rpcError {
	var re *rpcError
	switch {
	case errors.As(err, &re):
		return re
	case errors.As(err, new(errRetry)):
		return &rpcError{Code: pool.CodeNoLeader, Message: err.Error(), Retry: true}
	}
	return &rpcError{Code: pool.CodeOf(err), Message: err.Error()}
}

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
