package agent_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"os"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/state"
	"github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// An agent restarted while no controller answers programs the view it
// persisted, and keeps forwarding from it.
func Example_headlessRestart() {
	dir, err := os.MkdirTemp("", "weft-agent-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// The view a previous run of the agent persisted.
	var res []wire.Resource
	for _, r := range []any{
		&view.Host{Name: "h1", HostID: 7, UnderlayIP: "192.0.2.11"},
		&view.VPC{Tenant: "acme", Name: "main", VNI: 100, Subnets: []view.Subnet{{Name: "a", CIDR: "10.0.1.0/24"}}},
		&view.Endpoint{Tenant: "acme", Name: "web", VNI: 100, Subnet: "a", IP: "10.0.1.10", MAC: "02:00:0a:00:01:0a"},
	} {
		w, err := view.Encode(r)
		if err != nil {
			log.Fatal(err)
		}
		res = append(res, w)
	}
	v, err := state.New("h1").Apply(&wire.Delta{ToVersion: 12, Snapshot: true, Upserts: res})
	if err != nil {
		log.Fatal(err)
	}
	if err := v.Save(dir); err != nil {
		log.Fatal(err)
	}

	key := make([]byte, wire.KeySize)
	rand.Read(key)
	drv := sim.New(sim.Config{})
	defer drv.Close()
	a, err := agent.New(agent.Config{
		Host:        "h1",
		StreamAddrs: []string{"127.0.0.1:1"}, // nobody answers
		UDPAddr:     "127.0.0.1:9",
		Key:         key,
		Driver:      drv,
		StateDir:    dir,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	fmt.Println("version", a.ViewVersion(), "connected", a.Connected())
	fmt.Println(drv.State())
	// Output:
	// version 12 connected false
	// endpoint acme/web vni=100 subnet=a ip=10.0.1.10/24 mac=02:00:0a:00:01:0a gw=10.0.1.1 if=eth0 netns="" identity=0
	// host h1 underlay=192.0.2.11 dev= mtu=0
	// vpc 100 acme/main
	// vpc 100 subnet a 10.0.1.0/24 gw=10.0.1.1
}
