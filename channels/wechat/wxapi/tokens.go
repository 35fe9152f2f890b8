package wxapi

import (
	"context"
	"sync"
	"time"

	"github.com/silenceper/wechat/v2/cache"
)

// Cache is an in-memory cache.Cache for one channel instance's access
// token. Unlike the library's cache.Memory it can be emptied at once
// (Reset), which is how kefu drops a token WeChat has rejected without
// depending on the library's cache key format. Safe for concurrent use.
type Cache struct {
	mu  sync.Mutex
	m   map[string]cacheItem
	now func() time.Time
}

type cacheItem struct {
	v       any
	expires time.Time
}

// NewCache returns an empty cache.
func NewCache() *Cache { return &Cache{m: map[string]cacheItem{}, now: time.Now} }

// Get implements cache.Cache.
func (c *Cache) Get(key string) any {
	c.mu.Lock()
	defer c.mu.Unlock()
	it, ok := c.m[key]
	if !ok {
		return nil
	}
	if !c.now().Before(it.expires) {
		delete(c.m, key)
		return nil
	}
	return it.v
}

// Set implements cache.Cache. A value whose timeout is not positive is not
// kept (the library computes the timeout as expires_in minus a margin).
func (c *Cache) Set(key string, val any, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if timeout <= 0 {
		delete(c.m, key)
		return nil
	}
	c.m[key] = cacheItem{v: val, expires: c.now().Add(timeout)}
	return nil
}

// IsExist implements cache.Cache.
func (c *Cache) IsExist(key string) bool { return c.Get(key) != nil }

// Delete implements cache.Cache.
func (c *Cache) Delete(key string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
	return nil
}

// Reset empties the cache.
func (c *Cache) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}

// Tokens hands out an instance's access token from the library's token
// handle (which caches it in a Cache) and drops it when WeChat rejects it.
type Tokens struct {
	cache *Cache
	get   func(ctx context.Context) (string, error)
	api   string

	mu      sync.Mutex
	lastErr error
}

// NewTokens returns Tokens over get, a library token handle's
// GetAccessTokenContext whose cache is c. api names the token call in errors.
func NewTokens(c *Cache, api string, get func(ctx context.Context) (string, error)) *Tokens {
	return &Tokens{cache: c, get: get, api: api}
}

// Token returns the current access token, fetching one when none is cached.
// Errors carrying an errcode are *APIError.
func (t *Tokens) Token(ctx context.Context) (string, error) {
	tok, err := t.get(ctx)
	if err == nil && tok == "" {
		err = &APIError{API: t.api, Code: CodeSystemBusy, Msg: "empty access_token"}
	}
	if err != nil {
		if code, ok := Code(err); ok {
			err = &APIError{API: t.api, Code: code, Msg: err.Error()}
		}
	}
	t.mu.Lock()
	t.lastErr = err
	t.mu.Unlock()
	return tok, err
}

// LastError is the outcome of the last token fetch (nil after a success).
func (t *Tokens) LastError() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastErr
}

// Reset drops the cached token, so that the next Token fetches a new one.
func (t *Tokens) Reset() { t.cache.Reset() }

// Do calls f with a token. When f fails because WeChat rejected the token
// (TokenRejected: 40001, 40014, 42001), it drops the cached token and calls
// f once more with a fresh one. The library never does this itself.
func (t *Tokens) Do(ctx context.Context, f func(token string) error) error {
	tok, err := t.Token(ctx)
	if err != nil {
		return err
	}
	err = f(tok)
	if !TokenRejected(err) {
		return err
	}
	t.Reset()
	if tok, err = t.Token(ctx); err != nil {
		return err
	}
	return f(tok)
}

var _ cache.Cache = (*Cache)(nil)
