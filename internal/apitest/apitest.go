// Package apitest serves the controller's real REST API for tests of its
// clients (package client, the weft CLI, the agent's reporter): the
// controller/rest handler over the registry and store of internal/etcdtest
// (an embedded etcd), on a loopback HTTP server, with a client of it. Tests
// assert on the stored state through the registry and on the requests the
// server saw, and can put a function in front of the API to race or fail a
// request. It is imported only by tests.
//
//	srv := apitest.Start(t)
//	obj, err := srv.Client.Create(ctx, tenant)
//	stored, err := srv.Env.Registry.Get(ctx, apiv1.RefOf(tenant))
package apitest

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller/rest"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/etcdtest"
)

// Server is a running API.
type Server struct {
	// URL is the API's base URL (http://127.0.0.1:PORT).
	URL string
	// Client is a client of URL, closed when the test ends.
	Client *client.Client
	// Env is the etcd, store and registry behind the API.
	Env *etcdtest.Env

	mu        sync.Mutex
	requests  []string
	intercept func(w http.ResponseWriter, r *http.Request) bool
}

// Options adjust the server.
type Options struct {
	// Version is what /version reports (the controller reports its build's).
	Version string
	// Store adjusts the store's configuration.
	Store func(*store.Config)
}

// Start serves the API on loopback until the test ends; then it ends the
// watches still open and shuts everything down. Of several Options, the
// last counts.
func Start(t testing.TB, opts ...Options) *Server {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[len(opts)-1]
	}
	env := etcdtest.Start(t, etcdtest.Options{Store: o.Store})
	h, err := rest.NewHandler(rest.Config{Backend: env.Registry, Version: o.Version, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Env: env}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, r.Method+" "+r.URL.RequestURI())
		f := s.intercept
		s.mu.Unlock()
		if f != nil && f(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	}))
	// Requests end with the test, so that closing the server does not wait
	// for the watches a test left open.
	ctx, cancel := context.WithCancel(context.Background())
	ts.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	ts.Start()
	t.Cleanup(func() {
		cancel()
		ts.Close()
	})
	s.URL = ts.URL
	if s.Client, err = client.New(ts.URL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Client.Close() })
	return s
}

// Intercept puts f in front of the API (nil removes it): f sees every
// request first and returns true if it answered it itself (an injected
// failure), false to let the API serve it (after f has, say, raced it
// with another write).
func (s *Server) Intercept(f func(w http.ResponseWriter, r *http.Request) bool) {
	s.mu.Lock()
	s.intercept = f
	s.mu.Unlock()
}

// Requests returns "METHOD /path?query" of every request so far.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Writes returns the requests so far that could change state (all but GETs).
func (s *Server) Writes() []string {
	var out []string
	for _, r := range s.Requests() {
		if !strings.HasPrefix(r, http.MethodGet+" ") {
			out = append(out, r)
		}
	}
	return out
}

// LeakOptions are the goleak options of a test binary that runs an
// embedded etcd: etcd's server and client keep a few process-wide
// goroutines.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	}
}
