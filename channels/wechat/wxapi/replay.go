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
// plaintext body taken. A plaintext callback under a query seen before
// passes only with the same body (WeChat's retries), never after an
// encrypted one. An encrypted callback always passes: its msg_signature
// covers its body, so a retry encrypted afresh is still WeChat's.
//
// It is per process: in a cluster, a replay that reaches another node is not
// caught there. At most maxReplays queries are kept; past that the oldest
// are forgotten first.
type Replays struct {
	mu    sync.Mutex
	seen  map[string]seenBody
	queue []replay // in arrival order
	max   int
}

// seenBody is what came first under a query.
type seenBody struct {
	sum    [sha256.Size]byte
	sealed bool // an encrypted callback
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
// taken. sealed says the body is encrypted and its msg_signature verified.
func (r *Replays) Check(timestamp, nonce, signature string, body []byte, sealed bool, now time.Time) bool {
	// VerifySignature ignores the hex's case: so must the key, or a query
	// with its signature in capitals would be a new one.
	key := timestamp + "\x00" + nonce + "\x00" + strings.ToLower(signature)
	cur := seenBody{sum: sha256.Sum256(body), sealed: sealed}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = make(map[string]seenBody)
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
		return sealed || !prev.sealed && prev.sum == cur.sum
	}
	r.seen[key] = cur
	// A timestamp is accepted while within MaxSkew of the clock: whatever
	// it says, the query is stale 2 × MaxSkew after it first came.
	r.queue = append(r.queue, replay{key: key, until: now.Add(2 * MaxSkew)})
	return true
}
