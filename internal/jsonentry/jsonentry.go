// Package jsonentry frames the log entries that carry one command as JSON
// (access control's and the policy's): a marker byte no pool entry starts
// with, so the FSM tells the kinds apart by the first byte, a format
// version, the JSON, and a CRC-32C of every byte before it (u32 LE). Such
// commands are rare and small beside pool entries, so JSON costs nothing
// that matters and reads plainly in a log dump.
package jsonentry

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"

	"github.com/ippool/ippool/pool"
)

// Kind is one kind of entry.
type Kind struct {
	Marker, Version byte
	// Max bounds an entry, in bytes.
	Max int
	// Name names the kind in errors ("ACL", "policy").
	Name string
	// TooLarge is the code of a command refused at encoding for its size:
	// the API's code for a bad command of this kind.
	TooLarge pool.Code
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Is reports whether entry is of this kind.
func (k Kind) Is(entry []byte) bool { return len(entry) > 0 && entry[0] == k.Marker }

// Encode makes the entry of v.
func (k Kind) Encode(v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	b := append([]byte{k.Marker, k.Version}, body...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if len(b) > k.Max {
		return nil, pool.Errorf(k.TooLarge, "the %s entry takes %d bytes, over the limit of %d", k.Name, len(b), k.Max)
	}
	return b, nil
}

// Decode reads an entry Encode made into v. A damaged entry is
// pool.ErrCorruptEntry, as a damaged pool entry is; anything else it cannot
// read is pool.ErrBadCommand.
func (k Kind) Decode(b []byte, v any) error {
	if len(b) > k.Max {
		return pool.Errorf(pool.CodeBadCommand, "%s entry of %d bytes is over the limit of %d", k.Name, len(b), k.Max)
	}
	if len(b) < 6 || b[0] != k.Marker {
		return pool.Errorf(pool.CodeBadCommand, "not a %s entry", k.Name)
	}
	body := len(b) - 4
	if crc32.Checksum(b[:body], castagnoli) != binary.LittleEndian.Uint32(b[body:]) {
		return pool.Errorf(pool.CodeCorruptEntry, "%s entry fails its checksum", k.Name)
	}
	if b[1] != k.Version {
		return pool.Errorf(pool.CodeBadCommand, "%s entry has version %d; this server reads version %d", k.Name, b[1], k.Version)
	}
	if err := Strict(b[2:body], v); err != nil {
		return pool.Errorf(pool.CodeBadCommand, "%s entry does not decode: %v", k.Name, err)
	}
	return nil
}

// Strict decodes one JSON value into v, refusing unknown fields and
// anything after the value.
func Strict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return pool.Errorf(pool.CodeBadCommand, "data after the JSON value")
	}
	return nil
}
