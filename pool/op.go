package pool

import (
	"net/netip"
	"time"
)

// OpKind names a write to the state.
type OpKind uint8

const (
	OpAllocate      OpKind = 1 // Client, Domain
	OpMarkUsed      OpKind = 2 // Client, Addr, Domain
	OpRelease       OpKind = 3 // Client, Domain
	OpReleaseClient OpKind = 4 // Client
	OpSetConfig     OpKind = 5 // Config
	// OpUnhold gives a released address back to its client once ReuseHold
	// has passed; only a leader proposes it.
	OpUnhold OpKind = 6 // Client, Addr
)

func (k OpKind) String() string {
	switch k {
	case OpAllocate:
		return "allocate"
	case OpMarkUsed:
		return "mark-used"
	case OpRelease:
		return "release"
	case OpReleaseClient:
		return "release-client"
	case OpSetConfig:
		return "set-config"
	case OpUnhold:
		return "unhold"
	}
	return "unknown"
}

// Op is one write, as carried in the Raft log. Its Time is the time of the
// entry that carries it, which the leader chooses (S9); entries written
// before version 3 carry a time per op, the proposing server's.
type Op struct {
	Kind   OpKind
	ID     RequestID
	Time   time.Time
	Client string
	Domain string
	Addr   netip.Addr
	Config Config
}

// check is what the decoder of version v requires of an op's fields once
// they are read, and what the encoder requires before writing them: one set
// of rules, so that nothing the encoder writes is refused at apply.
func (op *Op) check(v byte) error {
	switch op.Kind {
	case OpAllocate, OpRelease:
		if err := ValidateClientID(op.Client); err != nil {
			return err
		}
		return checkDomain(op.Domain)
	case OpMarkUsed:
		if err := ValidateClientID(op.Client); err != nil {
			return err
		}
		if !op.Addr.Is4() {
			return errorf(CodeBadCommand, "mark-used needs an IPv4 address, not %v", op.Addr)
		}
		return checkDomain(op.Domain)
	case OpReleaseClient:
		return ValidateClientID(op.Client)
	case OpSetConfig:
		if v >= 3 {
			// Entries from before version 3 keep the rules they were
			// written under, so an older log replays to the same state.
			return op.Config.CheckNew()
		}
		return op.Config.Validate()
	case OpUnhold:
		if err := ValidateClientID(op.Client); err != nil {
			return err
		}
		if !op.Addr.Is4() {
			return errorf(CodeBadCommand, "unhold needs an IPv4 address, not %v", op.Addr)
		}
		return nil
	}
	return errorf(CodeBadCommand, "unknown op kind %d", op.Kind)
}

// checkDomain accepts only names already in normal form, as proposers write
// them.
func checkDomain(s string) error {
	n, err := NormalizeDomain(s)
	if err != nil {
		return err
	}
	if n != s {
		return errorf(CodeInvalidDomain, "domain %q is not in normal form", s)
	}
	return nil
}
