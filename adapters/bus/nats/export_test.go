package nats

import "time"

// KillConnection closes the Bus's connection without ending anything
// cleanly, as a node that dies does.
func (b *Bus) KillConnection() { b.conn.Close() }

// SetCheckInterval sets how often idle subscriptions check their consumer.
// Call it before any Bus exists (TestMain).
func SetCheckInterval(d time.Duration) { checkInterval = d }
