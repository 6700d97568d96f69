package linux

import "github.com/vishvananda/netns"

// SetPolicyFault makes every policy batch of a VPC for which fault returns
// true carry a rule the kernel refuses (nil: none), so that tests can see
// a VPC whose rules the kernel refuses fail alone.
func SetPolicyFault(d *Driver, fault func(vni uint32) bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.policyFault = fault
}

// NftGenerations reads the nftables generation of the namespace at path,
// which every committed transaction changes, over one connection.
func NftGenerations(path string) (read func() (uint32, error), done func(), err error) {
	fd, err := netns.GetFromPath(path)
	if err != nil {
		return nil, nil, err
	}
	defer fd.Close()
	c, err := newNftConn(fd)
	if err != nil {
		return nil, nil, err
	}
	return c.generation, func() { _ = c.CloseLasting() }, nil
}
