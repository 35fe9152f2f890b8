package slack

import "context"

// HandleEvent exposes handleEvent to the tests: what the HTTP endpoint and
// the Socket Mode loop do with a parsed event.
func HandleEvent(c *Channel, ctx context.Context, ev Event) error { return c.handleEvent(ctx, ev) }

// BotUser is the bot's user id once auth.test has answered.
func BotUser(c *Channel) string { return c.botUser() }
