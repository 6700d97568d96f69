package udp_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"time"

	"github.com/weftnet/weft/controller/liveness"
	"github.com/weftnet/weft/controller/southbound/udp"
	"github.com/weftnet/weft/wire"
)

// A server on loopback takes a heartbeat from host 7 into the liveness
// table.
func Example() {
	secret := sha256.Sum256([]byte("host 7's key"))
	keys := wire.KeyringFunc(func(id uint32) ([]byte, bool) { return secret[:], id == 7 })
	table, err := liveness.New(liveness.Config{Capacity: 1024})
	if err != nil {
		panic(err)
	}
	defer table.Close()
	srv, err := udp.New(udp.Config{Addr: "127.0.0.1:0", Keys: keys, Liveness: table})
	if err != nil {
		panic(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		panic(err)
	}
	defer srv.Close()

	// The agent's side: seal a heartbeat with the host's key and send it.
	key, _ := wire.NewKey(secret[:])
	pkt, _ := wire.Seal(nil, wire.Header{HostID: 7, Seq: wire.NewSequence(time.Now()).Next()},
		&wire.Heartbeat{ViewVersion: 3, Health: wire.HealthReady}, &key)
	conn, err := net.Dial("udp", srv.LocalAddr().String())
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	if _, err := conn.Write(pkt); err != nil {
		panic(err)
	}

	for srv.Stats().Heartbeats == 0 {
		time.Sleep(time.Millisecond)
	}
	table.Sweep(table.Now())
	info, _ := table.Get(7)
	fmt.Println(info.State, info.ViewVersion)
	// Output: Alive 3
}
