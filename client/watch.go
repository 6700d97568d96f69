package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Watch event types.
const (
	Added    = "ADDED"
	Modified = "MODIFIED"
	Deleted  = "DELETED"
	Error    = "ERROR"
)

// WatchEvent is one change seen by Watch.
type WatchEvent struct {
	// Type is Added, Modified, Deleted or Error.
	Type string
	// Object is the object after the change (its last state for Deleted);
	// nil for Error.
	Object apiv1.Object
	// Err is set for Error only: the *v1.StatusError the controller sent
	// (a Gone one means the caller must re-list), or why the stream broke.
	Err error
}

// Watch follows changes to the objects of a kind (tenant "" with a
// tenant-scoped kind: all tenants), optionally filtered by a label selector
// (and a field selector, WithFieldSelector): an object changed out of the
// selectors arrives as Deleted (its last state that matched), one changed
// into them as Added.
// With resourceVersion "" the stream starts with an Added event per existing
// object; with the resourceVersion of a List it carries exactly the changes
// after that list.
//
// Errors before the stream starts are returned (a *v1.StatusError with reason
// Gone if resourceVersion is older than the controller keeps). Errors after
// it started arrive as an event of Type Error, the last one. The
// channel is closed when ctx ends or the stream ends; a close while ctx is
// still live means the controller ended the stream (re-watch from the last
// seen resourceVersion). The goroutine behind the channel is bounded by ctx:
// callers that stop reading must cancel ctx.
func (c *Client) Watch(ctx context.Context, kind, tenant, selector, resourceVersion string, opts ...ListOption) (<-chan WatchEvent, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, err
	}
	path := collectionPath(k, tenant)
	q := url.Values{"watch": {"true"}}
	if selector != "" {
		q.Set("labelSelector", selector)
	}
	if resourceVersion != "" {
		q.Set("resourceVersion", resourceVersion)
	}
	for _, o := range opts {
		o(q)
	}
	resp, err := c.send(ctx, request{method: http.MethodGet, path: path, query: q})
	if err != nil {
		return nil, c.transportError(ctx, ctx, http.MethodGet, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return nil, statusError(http.MethodGet, path, resp.StatusCode, data)
	}
	ch := make(chan WatchEvent, 16)
	go c.readWatch(ctx, k, path, resp.Body, ch)
	return ch, nil
}

// readWatch decodes newline-delimited JSON events from body into ch until the
// stream or ctx ends.
func (c *Client) readWatch(ctx context.Context, k apiv1.KindInfo, path string, body io.ReadCloser, ch chan<- WatchEvent) {
	defer close(ch)
	defer body.Close()
	send := func(ev WatchEvent) bool {
		select {
		case ch <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	dec := json.NewDecoder(body)
	for {
		var raw struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&raw); err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return
			}
			send(WatchEvent{Type: Error, Err: fmt.Errorf("watch %s: read event: %w", path, err)})
			return
		}
		ev := WatchEvent{Type: raw.Type}
		switch raw.Type {
		case Added, Modified, Deleted:
			o, err := decodeObject(k, raw.Object)
			if err != nil {
				send(WatchEvent{Type: Error, Err: fmt.Errorf("watch %s: %s event: %w", path, raw.Type, err)})
				return
			}
			ev.Object = o
		case Error:
			ev.Err = statusError(http.MethodGet, path, 0, raw.Object)
		default:
			send(WatchEvent{Type: Error, Err: fmt.Errorf("watch %s: unknown event type %q", path, raw.Type)})
			return
		}
		if !send(ev) || ev.Type == Error {
			return // the controller ends a watch after an ERROR
		}
	}
}
