package wechat

import "time"

// SetClock replaces the channel's clock (callback freshness, job ages).
func SetClock(c *Channel, now func() time.Time) { c.now = now }

// SetMediaBudget replaces how long a callback waits for its media.
func SetMediaBudget(c *Channel, d time.Duration) { c.mediaBudget = d }

// ToInbound exposes the mapping of a parsed callback, for the fuzz test.
func ToInbound(b []byte) (ok bool, kind, text, mediaID, id string, err error) {
	m, err := ParseMessage(b)
	if err != nil {
		return false, "", "", "", "", err
	}
	in, ok := toInbound(m)
	return ok, string(in.Kind), in.Text, in.MediaID, in.ID, nil
}
