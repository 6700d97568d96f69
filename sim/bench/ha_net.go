package bench

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
)

// haNet is the network of an HA run with partitions: a testnet data
// centre whose host namespaces each hold one replica, the etcd peers on
// the underlay (192.0.2.0/24) and the APIs, southbound and etcd client
// URLs on a control subnet that the root namespace reaches over a root
// link. A partition cuts one member's namespace off the other members'
// underlay addresses with an nftables table; the API stays reachable, so
// its clients see what a cut-off replica answers.
type haNet struct {
	net *testnet.Net
}

const (
	// haNetPrefix + this process's ID names the namespaces and the root
	// link (at most 11 characters: the root link's name is <prefix>-ctl).
	haNetPrefix = "wha"
	// haPartitionTable is the nftables table (ip family) of a partition.
	haPartitionTable = "weft-ha-partition"
)

// newHANet builds the network of members replicas, after removing what
// runs that died left behind.
func newHANet(members int) (*haNet, error) {
	sweepHANets()
	control, err := freeControlSubnet()
	if err != nil {
		return nil, err
	}
	n, err := testnet.Build(testnet.Options{Prefix: haNetPrefix + strconv.Itoa(os.Getpid()), Hosts: members, Control: control, RootLink: true})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("bench: ha: network: %w", err), n.Close())
	}
	return &haNet{net: n}, nil
}

// close removes the namespaces (their partition tables with them) and the
// root link.
func (h *haNet) close() error { return h.net.Close() }

// partition drops, in member i's namespace, every packet from or to the
// other members' underlay addresses (their etcd peers).
func (h *haNet) partition(i int) error {
	var peers []netip.Addr
	for j, o := range h.net.Hosts() {
		if j != i {
			peers = append(peers, o.UnderlayIP)
		}
	}
	return withNFT(h.net.Host(i).Path, func(c *nftables.Conn) error {
		t := c.AddTable(&nftables.Table{Name: haPartitionTable, Family: nftables.TableFamilyIPv4})
		accept := nftables.ChainPolicyAccept
		for _, hook := range []struct {
			name   string
			hook   *nftables.ChainHook
			offset uint32 // of the peer's address in the IPv4 header: source in, destination out
		}{{"input", nftables.ChainHookInput, 12}, {"output", nftables.ChainHookOutput, 16}} {
			ch := c.AddChain(&nftables.Chain{Name: hook.name, Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: hook.hook, Priority: nftables.ChainPriorityFilter, Policy: &accept})
			for _, p := range peers {
				a := p.As4()
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: hook.offset, Len: 4},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
					&expr.Verdict{Kind: expr.VerdictDrop},
				}})
			}
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("bench: ha: partition %s: %w", h.net.Host(i).Name, err)
		}
		return nil
	})
}

// heal deletes member i's partition table.
func (h *haNet) heal(i int) error {
	return withNFT(h.net.Host(i).Path, func(c *nftables.Conn) error {
		c.DelTable(&nftables.Table{Name: haPartitionTable, Family: nftables.TableFamilyIPv4})
		if err := c.Flush(); err != nil {
			return fmt.Errorf("bench: ha: heal %s: %w", h.net.Host(i).Name, err)
		}
		return nil
	})
}

// withNFT runs fn with an nftables connection in the namespace at path.
func withNFT(path string, fn func(*nftables.Conn) error) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bench: ha: open netns %s: %w", path, err)
	}
	defer unix.Close(fd)
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return fmt.Errorf("bench: ha: nftables in %s: %w", path, err)
	}
	return fn(c)
}

// freeControlSubnet returns a /24 of 198.18.0.0/15 (RFC 2544's benchmark
// range) that no address of the root namespace is in: concurrent runs
// each add one to their root link.
func freeControlSubnet() (netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bench: ha: list addresses: %w", err)
	}
	used := map[netip.Prefix]bool{}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			b := p.Addr().As4()
			used[netip.PrefixFrom(netip.AddrFrom4([4]byte{b[0], b[1], b[2], 0}), 24)] = true
		}
	}
	first := os.Getpid() % 512
	for k := range 512 {
		n := (first + k) % 512
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + byte(n/256), byte(n % 256), 0}), 24)
		if !used[p] {
			return p, nil
		}
	}
	return netip.Prefix{}, errors.New("bench: ha: every /24 of 198.18.0.0/15 is in use")
}

var haNetLeftover = regexp.MustCompile(`^` + haNetPrefix + `([0-9]+)-`)

// sweepHANets removes the namespaces (and root links) of HA runs whose
// process is gone: a run that was killed could not.
func sweepHANets() {
	ents, err := os.ReadDir(netnsfile.DefaultDir)
	if err != nil {
		return
	}
	done := map[int]bool{}
	for _, e := range ents {
		m := haNetLeftover.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || done[pid] || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // alive
		}
		done[pid] = true
		_ = testnet.Remove(netnsfile.DefaultDir, haNetPrefix+m[1])
	}
}
