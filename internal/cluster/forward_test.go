package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/ippool/ippool/pool"
)

func sampleResults() []pool.Result {
	return []pool.Result{
		{Addr: netip.MustParseAddr("198.18.0.1"), Count: 1},
		{Addr: netip.MustParseAddr("198.18.3.7"), Count: 1, Reused: true},
		{Addr: netip.MustParseAddr("198.18.0.9")},
		{Count: 12},
		{Err: &pool.Error{Code: pool.CodePoolExhausted, Msg: "client c has used all 4 addresses"}},
	}
}

func TestForwardAnswerRoundTrip(t *testing.T) {
	want := sampleResults()
	got, err := decodeForwardAnswer(encodeForwardAnswer(want, nil), len(want))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}

	for _, in := range []error{errNotLeader, pool.Errorf(pool.CodeNoQuorum, "no quorum"), errRetry{errors.New("leadership lost")}} {
		_, err := decodeForwardAnswer(encodeForwardAnswer(nil, in), 3)
		var re *rpcError
		if !errors.As(err, &re) {
			t.Fatalf("%v came back as %T %v", in, err, err)
		}
		if want := asRPCError(in); *re != *want {
			t.Errorf("%v came back as %+v, want %+v", in, re, want)
		}
	}
}

func TestForwardAnswerRefusesMalformed(t *testing.T) {
	good := encodeForwardAnswer(sampleResults(), nil)
	if _, err := decodeForwardAnswer(good, len(sampleResults())+1); err == nil {
		t.Error("an answer with fewer results than ops was taken")
	}
	for i := range len(good) {
		if _, err := decodeForwardAnswer(good[:i], len(sampleResults())); err == nil {
			t.Errorf("an answer cut at %d of %d bytes was taken", i, len(good))
		}
	}
	bad := map[string][]byte{
		"trailing byte":  append(append([]byte(nil), good...), 0),
		"unknown kind":   {9},
		"unknown flag":   {answerResults, 1, 0x80, 0},
		"huge string":    {answerError, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"count overflow": {answerResults, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	}
	for name, b := range bad {
		if _, err := decodeForwardAnswer(b, 1); err == nil {
			t.Errorf("%s: taken", name)
		}
	}
}

func TestReadFrameRefusesOversizedAndShort(t *testing.T) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := writeFrame(w, 42, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	seq, body, err := readFrame(bufio.NewReader(bytes.NewReader(buf.Bytes())), 5)
	if err != nil || seq != 42 || string(body) != "hello" {
		t.Fatalf("readFrame = %d %q %v", seq, body, err)
	}
	if _, _, err := readFrame(bufio.NewReader(bytes.NewReader(buf.Bytes())), 4); err == nil {
		t.Error("a frame over the limit was read")
	}
	var short [frameHeader]byte
	binary.BigEndian.PutUint32(short[:4], 3) // shorter than its own sequence number
	if _, _, err := readFrame(bufio.NewReader(bytes.NewReader(short[:])), 100); err == nil {
		t.Error("a frame shorter than its header was read")
	}
}

// FuzzDecodeForwardAnswer: no input panics, and whatever decodes encodes
// back to an answer that decodes the same.
func FuzzDecodeForwardAnswer(f *testing.F) {
	f.Add(encodeForwardAnswer(sampleResults(), nil), 5)
	f.Add(encodeForwardAnswer(nil, errNotLeader), 1)
	f.Add([]byte{answerResults, 0}, 0)
	f.Fuzz(func(t *testing.T, b []byte, want int) {
		if want < 0 || want > 1<<16 {
			return
		}
		res, err := decodeForwardAnswer(b, want)
		if err != nil {
			return
		}
		again, err := decodeForwardAnswer(encodeForwardAnswer(res, nil), want)
		if err != nil || !reflect.DeepEqual(again, res) {
			t.Fatalf("re-encoded answer decodes to %+v, %v; first %+v", again, err, res)
		}
	})
}

// TestForwardingSurvivesDroppedStreams: when the leader drops every
// forwarding connection while followers write, the followers' writes are
// retried over new connections and each is applied once.
func TestForwardingSurvivesDroppedStreams(t *testing.T) {
	tc := startCluster(t, 3, nil)
	defer tc.stopAll()
	leader := tc.waitReady(3)
	var followers []*Node
	for _, n := range tc.nodes {
		if n != leader {
			followers = append(followers, n)
		}
	}
	ctx := context.Background()
	const perWriter = 200
	var wg sync.WaitGroup
	errs := make(chan error, 2*perWriter)
	for w, f := range followers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				res, err := f.Propose(ctx, []pool.Op{allocOp(f, fmt.Sprintf("w%d", w), fmt.Sprintf("d%d.example", i))})
				if err == nil {
					err = res[0].Err
				}
				if err == nil && res[0].Count != 1 {
					err = fmt.Errorf("write %d of %s: count %d, want a new mapping", i, f.ID(), res[0].Count)
				}
				if err != nil {
					errs <- err
				}
				if i%20 == 10 {
					// Drop the streams under the writers' feet.
					leader.fwdConns.mu.Lock()
					for c := range leader.fwdConns.conns {
						c.Close()
					}
					leader.fwdConns.mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for w := range followers {
		var n int
		leader.Read(func(s *pool.State) { n = len(s.Mappings(fmt.Sprintf("w%d", w))) })
		if n != perWriter {
			t.Errorf("client w%d has %d mappings on the leader, want %d", w, n, perWriter)
		}
	}
}

// A batch on the forwarding stream hears back exactly once: its answer, a
// timeout when the leader keeps the connection but never answers, or the
// error that broke the connection.
func TestFwdConnAnswersEachBatchOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The "leader" answers batches whose body is "answer" and ignores the rest.
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br, bw := bufio.NewReader(c), bufio.NewWriter(c)
		for {
			seq, body, err := readFrame(br, 1<<10)
			if err != nil {
				return
			}
			if string(body) == "answer" {
				writeFrame(bw, seq, []byte("ok"))
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fc := &fwdConn{addr: ln.Addr().String(), c: c, bw: bufio.NewWriter(c), pending: map[uint64]*fwdCall{}}
	go fc.readAnswers()

	type outcome struct {
		body string
		err  error
	}
	start := func(body string, timeout time.Duration) chan outcome {
		ch := make(chan outcome, 2)
		fc.start([]byte(body), timeout, func(b []byte, err error) { ch <- outcome{string(b), err} })
		return ch
	}
	var all []chan outcome
	once := func(ch chan outcome) outcome {
		all = append(all, ch)
		return <-ch
	}

	if o := once(start("answer", time.Minute)); o.err != nil || o.body != "ok" {
		t.Fatalf("answered batch: %+v, want body ok", o)
	}
	if o := once(start("silence", 20*time.Millisecond)); !errors.Is(o.err, errNoAnswer) {
		t.Fatalf("unanswered batch: %+v, want errNoAnswer", o)
	}
	waiting := start("silence", time.Minute)
	broken := errors.New("connection broke")
	fc.fail(broken)
	if o := once(waiting); !errors.Is(o.err, broken) {
		t.Fatalf("batch on a broken connection: %+v, want the break", o)
	}
	if o := once(start("answer", time.Minute)); !errors.Is(o.err, broken) {
		t.Fatalf("batch started on a dead connection: %+v, want the break", o)
	}
	// fail told every batch still waiting, synchronously: none that heard
	// back before may hear again.
	fc.fail(errors.New("failed again"))
	for i, ch := range all {
		if len(ch) != 0 {
			t.Errorf("batch %d heard back twice: %+v", i, <-ch)
		}
	}
}

// FuzzReadFrame: a forwarding frame from the wire is refused or read whole,
// never past its limit, and what is read writes back as the bytes it came
// from.
func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	writeFrame(w, 7, []byte("body"))
	f.Add(buf.Bytes(), uint16(16))
	f.Add(buf.Bytes(), uint16(3))
	f.Add([]byte{0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1, 'x'}, uint16(1000))
	f.Fuzz(func(t *testing.T, data []byte, limit uint16) {
		seq, body, err := readFrame(bufio.NewReader(bytes.NewReader(data)), int(limit))
		if err != nil {
			return
		}
		if len(body) > int(limit) {
			t.Fatalf("read a %d-byte body past the limit %d", len(body), limit)
		}
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		if err := writeFrame(bw, seq, body); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, out.Bytes()) {
			t.Fatalf("frame read as seq %d, %d bytes, writes back as %x, not a prefix of %x", seq, len(body), out.Bytes(), data)
		}
	})
}
