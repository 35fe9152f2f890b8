package wecom

// SetClustered makes the channel claim callbacks in the store, as on a
// node whose bus other nodes share. Call it before the channel serves.
func (c *Channel) SetClustered() { c.clustered = true }
