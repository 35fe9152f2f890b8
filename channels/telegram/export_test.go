package telegram

// SetHandledHook makes c's poller call f after each update is stored and
// before the offset moves past it (a crash at that point, in tests).
func SetHandledHook(c *Channel, f func(updateID int64)) {
	if c.poller != nil {
		c.poller.handled = f
	}
}
