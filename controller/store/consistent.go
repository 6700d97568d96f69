package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Sync waits until the cache has applied every write etcd committed before
// the call: it reads etcd's revision with a linearizable read (one the
// leader confirms with a quorum) and waits for the cache to reach it. A
// cache read after Sync is linearizable: it sees every write acknowledged
// before Sync began, through whichever replica or member. Without a quorum
// Sync blocks until ctx ends.
func (s *Store) Sync(ctx context.Context) error {
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("store: read the current revision: %w", err)
	}
	if err := s.WaitForRevision(ctx, resp.Header.Revision); err != nil {
		return fmt.Errorf("store: wait for revision %d: %w", resp.Header.Revision, err)
	}
	return nil
}
