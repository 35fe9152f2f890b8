package sqlite

import "github.com/kefuhq/kefu/core"

// maxCachedConvs bounds the writer's conversation cache; past it the cache
// starts over.
const maxCachedConvs = 16384

// convCache holds conversation rows as the writer last read or wrote them,
// so that an append need not read its conversation first. Only the writer
// goroutine uses it. It stays exact because the writer is the only one that
// writes conversations, and because whatever a write touched is forgotten
// when that write is rolled back: an op that fails evicts the rows it put,
// and a batch that fails to commit clears the cache.
type convCache struct {
	m       map[int64]core.Conversation
	touched []int64 // rows put by the running op
}

func newConvCache() *convCache {
	return &convCache{m: make(map[int64]core.Conversation)}
}

func (c *convCache) get(id int64) (core.Conversation, bool) {
	v, ok := c.m[id]
	return v, ok
}

func (c *convCache) put(v core.Conversation) {
	if len(c.m) >= maxCachedConvs {
		clear(c.m)
	}
	c.m[v.ID] = v
	c.touched = append(c.touched, v.ID)
}

// begin starts an op.
func (c *convCache) begin() { c.touched = c.touched[:0] }

// undo forgets what the running op put: its writes were rolled back.
func (c *convCache) undo() {
	for _, id := range c.touched {
		delete(c.m, id)
	}
	c.touched = c.touched[:0]
}

// forget forgets what the running op has put so far, and still forgets it
// again if the op fails: part of its writes were rolled back to a savepoint.
func (c *convCache) forget() {
	for _, id := range c.touched {
		delete(c.m, id)
	}
}

// reset forgets everything: a transaction failed.
func (c *convCache) reset() {
	clear(c.m)
	c.touched = c.touched[:0]
}
