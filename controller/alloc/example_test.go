package alloc_test

import (
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/controller/alloc"
)

func ExamplePool() {
	pool, err := alloc.NewPool(netip.MustParsePrefix("10.0.1.0/24"), netip.MustParseAddr("10.0.1.1"), 0)
	if err != nil {
		panic(err)
	}
	// A static address, for example one read back from etcd at start-up.
	if err := pool.Reserve(netip.MustParseAddr("10.0.1.20"), "h2"); err != nil {
		panic(err)
	}
	ip, err := pool.Allocate("h1")
	if err != nil {
		panic(err)
	}
	// ... commit the endpoint and its reservation key in one etcd
	// transaction; on failure, pool.Release(ip).
	fmt.Println(ip, alloc.MAC(ip))
	fmt.Println(pool.Blocks("h1"), pool.Blocks("h2"), pool.Free())
	// Output:
	// 10.0.1.2 0a:58:0a:00:01:02
	// [10.0.1.0/28] [10.0.1.16/28] 251
}

func ExampleVNIs() {
	vnis, err := alloc.NewVNIs(alloc.DefaultMinVNI, alloc.MaxVNI)
	if err != nil {
		panic(err)
	}
	if err := vnis.Reserve(4097); err != nil { // seeded from etcd
		panic(err)
	}
	a, _ := vnis.Allocate()
	b, _ := vnis.Allocate()
	vnis.Release(a) // the etcd transaction failed
	c, _ := vnis.Allocate()
	fmt.Println(a, b, c, vnis.Used())
	// Output: 4096 4098 4099 3
}
