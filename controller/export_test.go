package controller

import "time"

// WithTrackGrace returns cfg with the time hosts get to reach a replica
// before their silence counts shortened to d.
func WithTrackGrace(cfg Config, d time.Duration) Config {
	cfg.trackGrace = d
	return cfg
}
