// Package owned names what the kernel drivers (datapath/linux,
// datapath/ebpf) make, so that a restarted driver finds and adopts its own
// objects and prunes only its own orphans: endpoint namespaces
// "<prefix>-<host>-e<hash>", veths with the alias "weft:<endpoint ID>",
// names hashed from endpoint IDs, and the distributed gateway's MAC.
package owned

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net"
	"strings"
)

// AliasPrefix starts the alias of the driver's end of an endpoint's veth;
// the endpoint ID follows.
const AliasPrefix = "weft:"

// Alias is the alias of the driver's end of endpoint id's veth.
func Alias(id string) string { return AliasPrefix + id }

// GatewayMAC is the MAC of the distributed gateway (02:77:66:74:67:77, the
// same on every host): the driver's end of every endpoint veth has it, and
// every endpoint resolves its gateway to it.
func GatewayMAC() net.HardwareAddr { return net.HardwareAddr{0x02, 0x77, 0x66, 0x74, 0x67, 0x77} }

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Hash is the first n characters of a lowercase base32 SHA-256 of id: a
// name part that fits interface and namespace names.
func Hash(id string, n int) string {
	s := sha256.Sum256([]byte(id))
	return b32.EncodeToString(s[:])[:n]
}

const epHashLen = 16

// Netns names the namespaces a driver makes for one host:
// "<prefix>-<host>-" and a kind (named namespaces are global on a machine,
// so the host name is part of the mark).
type Netns struct {
	base string
}

// NewNetns returns the names of the driver with prefix on host.
func NewNetns(prefix, host string) Netns { return Netns{base: prefix + "-" + host + "-"} }

// Base is "<prefix>-<host>-".
func (n Netns) Base() string { return n.base }

// Endpoint is the name of the namespace the driver makes for endpoint id.
func (n Netns) Endpoint(id string) string { return n.base + "e" + Hash(id, epHashLen) }

// IsEndpoint reports whether name is an endpoint namespace of this driver.
func (n Netns) IsEndpoint(name string) bool {
	rest, ok := strings.CutPrefix(name, n.base+"e")
	if !ok || len(rest) != epHashLen {
		return false
	}
	_, err := b32.DecodeString(rest)
	return err == nil
}

// CheckName checks a host name or prefix: 1..64 letters, digits and (not
// first) '-', '_', '.'.
func CheckName(what, s string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("%s %q: want 1..64 characters", what, s)
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (i > 0 && (r == '-' || r == '_' || r == '.'))
		if !ok {
			return fmt.Errorf("%s %q: only letters, digits and (not first) '-', '_', '.'", what, s)
		}
	}
	return nil
}
