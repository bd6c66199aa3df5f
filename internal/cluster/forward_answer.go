package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/ippool/ippool/pool"
)

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
