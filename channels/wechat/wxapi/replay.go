package wxapi

import (
	"crypto/sha256"
	"strings"
	"sync"
	"time"
)

// Replays remembers the signed queries of the callbacks a channel took, with
// a hash of each body, for as long as CheckTimestamp accepts their
// timestamp. The Official Account's signature covers the token, timestamp
// and nonce, not the body: without this, anyone who saw one callback's query
// (an access log, a proxy) could post any body under it for MaxSkew, and in
// safe mode could strip encrypt_type and msg_signature to have a forged
// plaintext body taken. The same query with the same body (WeChat's retries)
// passes; with another body it is refused.
//
// It is per process: in a cluster, a replay that reaches another node is not
// caught there. At most maxReplays queries are kept; past that the oldest
// are forgotten first.
type Replays struct {
	mu    sync.Mutex
	seen  map[string][sha256.Size]byte
	queue []replay // in arrival order
	max   int
}

type replay struct {
	key   string
	until time.Time
}

// maxReplays bounds the queries Replays keeps: about 200 callbacks a second
// over 2 × MaxSkew, some 15 MB.
const maxReplays = 1 << 17

// Check records a callback whose query has been verified (timestamp, nonce
// and signature) with its body, at now, and reports whether it may be
// taken: false when the same query came before with another body.
func (r *Replays) Check(timestamp, nonce, signature string, body []byte, now time.Time) bool {
	// VerifySignature ignores the hex's case: so must the key, or a query
	// with its signature in capitals would be a new one.
	key := timestamp + "\x00" + nonce + "\x00" + strings.ToLower(signature)
	sum := sha256.Sum256(body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = make(map[string][sha256.Size]byte)
		if r.max == 0 {
			r.max = maxReplays
		}
	}
	for len(r.queue) > 0 && (len(r.queue) >= r.max || now.After(r.queue[0].until)) {
		delete(r.seen, r.queue[0].key)
		r.queue[0] = replay{}
		r.queue = r.queue[1:]
	}
	if prev, ok := r.seen[key]; ok {
		return prev == sum
	}
	r.seen[key] = sum
	// A timestamp is accepted while within MaxSkew of the clock: whatever
	// it says, the query is stale 2 × MaxSkew after it first came.
	r.queue = append(r.queue, replay{key: key, until: now.Add(2 * MaxSkew)})
	return true
}
