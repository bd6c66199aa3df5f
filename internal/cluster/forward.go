package cluster

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
