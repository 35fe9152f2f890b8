package nats

import "time"

// KillConnection closes the Bus's connection without ending anything
// cleanly, as a node that dies does.
func (b *Bus) KillConnection() { b.conn.Close() }

// SetCheckEvery sets how often b's idle subscriptions check their consumer
// (before it has any).
func (b *Bus) SetCheckEvery(d time.Duration) { b.checkEvery = d }

// SetCheckInterval sets how often idle subscriptions check their consumer.
// Call it before any Bus exists (TestMain).
func SetCheckInterval(d time.Duration) { checkInterval = d }
