package slack

import (
	"context"
	"time"
)

// HandleEvent exposes handleEvent to the tests: what the HTTP endpoint and
// the Socket Mode loop do with a parsed event.
func HandleEvent(c *Channel, ctx context.Context, ev Event) error { return c.handleEvent(ctx, ev) }

// BotUser is the bot's user id once auth.test has answered.
func BotUser(c *Channel) string { return c.botUser() }

// RateLimitedUntil is when the instance's rate-limit gate opens again.
func (c *Channel) RateLimitedUntil() time.Time {
	c.api.mu.Lock()
	defer c.api.mu.Unlock()
	return c.api.notBefore
}
