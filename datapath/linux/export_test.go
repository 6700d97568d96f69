package linux

// SetPolicyFault makes every policy batch of a VPC for which fault returns
// true carry a rule the kernel refuses (nil: none), so that tests can see
// a VPC whose rules the kernel refuses fail alone.
func SetPolicyFault(d *Driver, fault func(vni uint32) bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.policyFault = fault
}
