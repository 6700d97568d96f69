package cniserver_test

import (
	"fmt"

	"github.com/weftnet/weft/agent/cniserver"
)

// The agent names the interface of a CNI attachment's endpoint after the
// end of its name; other endpoints get the default.
func ExampleIfName() {
	fmt.Printf("%q\n", cniserver.IfName("acme/cni-0123456789ab-net1"))
	fmt.Printf("%q\n", cniserver.IfName("acme/web-1"))
	// Output:
	// "net1"
	// ""
}
