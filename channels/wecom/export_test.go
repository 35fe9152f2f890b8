package wecom

// ForgetAgents drops the channel's cached agent list.
func ForgetAgents(c *Channel) { c.forgetAgents() }
