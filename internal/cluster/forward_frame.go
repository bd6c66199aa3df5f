package cluster

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
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
