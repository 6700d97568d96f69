package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/restreport"
	"github.com/weftnet/weft/client"
)

// failoverReporter is an agent.Reporter over several replicas' APIs: it
// reports through one and moves to the next when a call fails (the
// replica stopped), as an agent configured with several API URLs would.
type failoverReporter struct {
	rs []*restreport.Reporter
	at atomic.Int64
}

var _ agent.Reporter = (*failoverReporter)(nil)

// newFailoverReporters returns the clients of apis (plain HTTP, no
// credential: the harness's replicas serve their API so) for the caller
// to close, and a function making each host's reporter, starting at
// replica first.
func newFailoverReporters(apis []string) ([]*client.Client, func(first int) *failoverReporter, error) {
	var cs []*client.Client
	for _, a := range apis {
		c, err := client.New("http://"+a, client.WithMaxIdleConnsPerHost(64))
		if err != nil {
			for _, c := range cs {
				c.Close()
			}
			return nil, nil, fmt.Errorf("API client of %s: %w", a, err)
		}
		cs = append(cs, c)
	}
	return cs, func(first int) *failoverReporter {
		f := &failoverReporter{}
		for _, c := range cs {
			f.rs = append(f.rs, restreport.New(c))
		}
		f.at.Store(int64(first % len(cs)))
		return f
	}, nil
}

// try calls call on the current reporter, and on the next ones after a
// failure that is not a rejection.
func (f *failoverReporter) try(call func(r *restreport.Reporter) error) error {
	var err error
	for range f.rs {
		at := f.at.Load()
		if err = call(f.rs[at]); err == nil || errors.Is(err, agent.ErrRejected) {
			return err
		}
		f.at.CompareAndSwap(at, (at+1)%int64(len(f.rs)))
	}
	return err
}

func (f *failoverReporter) Register(ctx context.Context, host, underlayIP string) error {
	return f.try(func(r *restreport.Reporter) error { return r.Register(ctx, host, underlayIP) })
}

func (f *failoverReporter) ReportEndpoints(ctx context.Context, reports []agent.EndpointReport) error {
	return f.try(func(r *restreport.Reporter) error { return r.ReportEndpoints(ctx, reports) })
}
