package rendezvous

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestOrder(t *testing.T) {
	addrs := []string{"10.0.0.1:7444", "10.0.0.2:7444", "10.0.0.3:7444"}
	t.Run("deterministic, a permutation, duplicates dropped", func(t *testing.T) {
		a := Order("h1", addrs)
		b := Order("h1", []string{addrs[2], addrs[0], addrs[1], addrs[0]})
		if diff := cmp.Diff(a, b); diff != "" {
			t.Errorf("order depends on the input order (-a +b):\n%s", diff)
		}
		if len(a) != 3 {
			t.Errorf("order %v, want the 3 distinct addresses", a)
		}
	})
	t.Run("hosts spread evenly", func(t *testing.T) {
		const hosts = 30_000
		first := map[string]int{}
		for i := range hosts {
			first[Order(fmt.Sprintf("host-%d", i), addrs)[0]]++
		}
		for _, a := range addrs {
			// Expected 10,000 each; the standard deviation is about 82.
			if n := first[a]; n < 9_500 || n > 10_500 {
				t.Errorf("replica %s is first for %d of %d hosts, want about %d", a, n, hosts, hosts/3)
			}
		}
	})
	t.Run("removing a replica moves only its hosts", func(t *testing.T) {
		for i := range 3_000 {
			h := fmt.Sprintf("host-%d", i)
			before := Order(h, addrs)
			after := Order(h, addrs[:2]) // 10.0.0.3 removed
			if before[0] != addrs[2] && after[0] != before[0] {
				t.Fatalf("host %s moved from %s to %s though its replica stayed", h, before[0], after[0])
			}
			if before[0] == addrs[2] && after[0] != before[1] {
				t.Fatalf("host %s on the removed replica went to %s, not its second choice %s", h, after[0], before[1])
			}
		}
	})
}

func TestTopIsFirstOfOrder(t *testing.T) {
	addrs := []string{"10.0.0.1:7444", "10.0.0.2:7444", "10.0.0.3:7444", "10.0.0.4:7444"}
	for i := range 1_000 {
		h := fmt.Sprintf("host-%d", i)
		if top, first := Top(h, addrs), Order(h, addrs)[0]; top != first {
			t.Fatalf("Top(%s) = %s, Order's first = %s", h, top, first)
		}
	}
	if got := Top("h", nil); got != "" {
		t.Errorf("Top of no replicas = %q, want empty", got)
	}
}
