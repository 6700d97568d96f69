package sim

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/wire"
)

// controllerCounters are the southbound counters of one replica, from its
// /metrics.
type controllerCounters struct {
	Heartbeats    float64 // authentic heartbeats processed
	Found         float64 // lookup queries answered "found"
	NotFound      float64 // lookup queries answered "not found"
	Invalidations float64 // invalidations sent
}

// scrape reads a replica's southbound counters from its /metrics.
func scrape(ctx context.Context, api string) (controllerCounters, error) {
	var c controllerCounters
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+api+"/metrics", nil)
	if err != nil {
		return c, fmt.Errorf("scrape %s: %w", api, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return c, fmt.Errorf("scrape %s: %w", api, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("scrape %s: %s", api, resp.Status)
	}
	want := map[string]*float64{
		`weft_udp_accepted_total{type="` + wire.TypeHeartbeat.String() + `"}`: &c.Heartbeats,
		`weft_udp_lookup_queries_total{result="found"}`:                       &c.Found,
		`weft_udp_lookup_queries_total{result="not_found"}`:                   &c.NotFound,
		`weft_udp_sent_total{type="` + wire.TypeInvalidate.String() + `"}`:    &c.Invalidations,
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if p := want[name]; ok && p != nil {
			*p, _ = strconv.ParseFloat(strings.TrimSpace(val), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return c, fmt.Errorf("scrape %s: %w", api, err)
	}
	return c, nil
}
