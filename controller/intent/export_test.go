package intent

// Idle reports whether the controller has followed the store up to rev and
// has nothing to reconcile now (retries may be scheduled).
func (c *Controller) Idle(rev int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rev >= rev && len(c.dirty) == 0 && !c.busy
}
