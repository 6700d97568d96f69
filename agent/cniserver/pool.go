package cniserver

import (
	"context"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// PoolConfig configures the warm pool.
type PoolConfig struct {
	// Max is the most endpoints the pool keeps ready per selection (0: no
	// pool).
	Max int
}

func (c PoolConfig) withDefaults() PoolConfig { return c }

func (c PoolConfig) validate() error { return nil }

type pool struct{ s *Server }

func newPool(s *Server) *pool { return &pool{s: s} }

func (p *pool) start() {}

func (p *pool) claim(context.Context, *call, *selection) (*apiv1.Endpoint, error) { return nil, nil }

func (p *pool) released(*apiv1.Endpoint) {}
