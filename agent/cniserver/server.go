package cniserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/agent/cnirpc"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/internal/lifecycle"
)

// DefaultTimeout bounds an ADD's wait for its endpoint to be programmed.
const DefaultTimeout = time.Minute

// API is what the server needs of the controller's REST API, with the
// agent's credential (*client.Client).
type API interface {
	Create(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error)
	Get(ctx context.Context, kind, tenant, name string) (apiv1.Object, error)
	Update(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error)
	Delete(ctx context.Context, kind, tenant, name string, opts ...apiv1.WriteOption) (apiv1.Object, error)
	List(ctx context.Context, kind, tenant, selector string, opts ...client.ListOption) ([]apiv1.Object, string, error)
}

// Attacher programs endpoints of the agent's view that waited for their
// namespace, once it exists (*agent.Agent).
type Attacher interface {
	Attach(ctx context.Context, ids []string) error
}

// Selection is the subnet the attachments of a network configuration that
// names none join.
type Selection struct {
	Tenant, VPC, Subnet string
}

// Config configures a Server. Socket, Host, API and Tap are required.
type Config struct {
	// Socket is the unix socket to serve on (made with mode 0600; a stale
	// one is replaced).
	Socket string
	// Host is this host's name: the spec.host of the endpoints made.
	Host string
	// API is the controller's REST API, with the agent's credential.
	API API
	// Tap is the agent's Reporter (NewTap): ADDs wait on it.
	Tap *Tap
	// Agent is the agent, which the warm pool asks to attach an endpoint
	// once it bound its namespace (required with a pool).
	Agent Attacher
	// Default is the subnet of network configurations that name none.
	Default Selection
	// Timeout bounds an ADD's wait for its endpoint (default
	// DefaultTimeout).
	Timeout time.Duration
	// Pool configures the warm pool (none when Max is 0).
	Pool PoolConfig
	// Logger receives the server's logs (default: discarded).
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c.Pool = c.Pool.withDefaults()
	return c
}

// Validate checks c (with defaults applied).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Socket == "" || !filepath.IsAbs(c.Socket) {
		errs = append(errs, fmt.Errorf("Socket %q: want an absolute path", c.Socket))
	}
	if c.Host == "" {
		errs = append(errs, errors.New("Host is required"))
	}
	if c.API == nil || c.Tap == nil {
		errs = append(errs, errors.New("API and Tap are required"))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("Timeout %v is negative", c.Timeout))
	}
	errs = append(errs, c.Pool.validate())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cni server config: %w", err)
	}
	return nil
}

// Server is the agent's CNI server. Build it with New, run it with Start,
// stop it with Close.
type Server struct {
	cfg  Config
	log  *slog.Logger
	life lifecycle.Group
	srv  *http.Server
	pool *pool

	// adopted is closed once the endpoints of this host's attachments
	// were listed (adopt): calls wait for it.
	adopted chan struct{}

	mu      sync.Mutex
	hostUID string                         // of this host's Host, once read
	subnets map[string]*subnetInfo         // by "tenant/name", once read
	index   map[attachment]*apiv1.Endpoint // the endpoints of this host's attachments
}

// subnetInfo is what a result needs of a subnet.
type subnetInfo struct {
	uid, vpc string
	cidr     *net.IPNet
	gateway  net.IP
}

// New validates cfg and returns a server that is not started.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger.With("subsystem", "agent/cniserver", "host", cfg.Host), adopted: make(chan struct{}),
		subnets: map[string]*subnetInfo{}, index: map[attachment]*apiv1.Endpoint{}}
	s.pool = newPool(s)
	return s, nil
}

// Start listens on the socket and serves until Close; the warm pool runs
// in the background. ctx bounds only the listen.
func (s *Server) Start(ctx context.Context) error {
	if _, err := s.life.Start(); err != nil {
		return fmt.Errorf("cni server: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("cni server: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.cfg.Socket), 0o755); err != nil {
		return fmt.Errorf("cni server: %w", err)
	}
	// A socket left by an earlier agent (killed) is in the way.
	if err := os.Remove(s.cfg.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cni server: %w", err)
	}
	ln, err := net.Listen("unix", s.cfg.Socket)
	if err != nil {
		return fmt.Errorf("cni server: %w", err)
	}
	if err := os.Chmod(s.cfg.Socket, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("cni server: %w", err)
	}
	life := s.life.Context()
	s.srv = &http.Server{
		Handler:           rpcHandler(s.handle),
		ReadHeaderTimeout: 10 * time.Second,
		// Calls outlive the plugin's connection only by their own bound.
		BaseContext: func(net.Listener) context.Context { return life },
	}
	s.life.Go(func(context.Context) {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("cni server stopped", "err", err)
		}
	})
	s.life.Go(s.run)
	s.log.Info("cni server started", "socket", s.cfg.Socket, "pool_max", s.cfg.Pool.Max)
	return nil
}

// run adopts this host's attachments (until the API answers), then runs
// the warm pool.
func (s *Server) run(ctx context.Context) {
	for attempt := 1; ; attempt++ {
		err := s.adopt(ctx)
		if err == nil {
			break
		}
		s.log.Warn("cni server: listing this host's attachments failed, retrying", "err", err)
		if !sleepCtx(ctx, min(time.Duration(attempt)*100*time.Millisecond, 5*time.Second)) {
			return
		}
	}
	close(s.adopted)
	s.pool.run(ctx)
}

// adopt indexes the endpoints of this host's attachments, which an
// earlier agent made, and hands the pool its own.
func (s *Server) adopt(ctx context.Context) error {
	eps, err := s.attachments(ctx)
	if err != nil {
		return err
	}
	undo, err := s.pool.adopt(eps)
	if err != nil {
		return err
	}
	for _, ep := range undo {
		if err := s.remove(ctx, ep); err != nil {
			return err
		}
	}
	for _, ep := range eps {
		an := ep.Metadata.Annotations
		if id := an[AnnotationContainerID]; id != "" {
			s.setIndex(attachment{network: an[AnnotationNetwork], containerID: id, ifName: an[AnnotationIfName]}, ep)
		}
	}
	return nil
}

// waitAdopted waits until the server adopted this host's attachments.
func (s *Server) waitAdopted(ctx context.Context) error {
	select {
	case <-s.adopted:
		return nil
	case <-ctx.Done():
		return types.NewError(types.ErrTryAgainLater, "the weft agent has not listed its attachments yet (is the controller's API reachable?)", ctx.Err().Error())
	}
}

// indexed returns the endpoint of attachment a, nil if none is known.
func (s *Server) indexed(a attachment) *apiv1.Endpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.index[a]
}

// setIndex records ep as the endpoint of a.
func (s *Server) setIndex(a attachment, ep *apiv1.Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index[a] = ep
}

// unindex forgets the attachment of ep.
func (s *Server) unindex(ep *apiv1.Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for a, e := range s.index {
		if e.Metadata.UID == ep.Metadata.UID {
			delete(s.index, a)
		}
	}
}

// Close stops serving (calls in progress are cancelled and waited for)
// and the pool. It is idempotent.
func (s *Server) Close() error {
	return s.life.Close(func() error {
		if s.srv == nil {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := s.srv.Shutdown(ctx)
		_ = os.Remove(s.cfg.Socket)
		return err
	})
}

// handle answers one call.
func (s *Server) handle(ctx context.Context, req *cnirpc.Request) (json.RawMessage, error) {
	start := time.Now()
	var res json.RawMessage
	var err error
	switch req.Command {
	case "ADD":
		res, err = s.add(ctx, req)
	case "DEL":
		err = s.del(ctx, req)
	case "CHECK":
		err = s.check(ctx, req)
	case "GC":
		err = s.gc(ctx, req)
	case "STATUS":
		err = s.status(ctx, req)
	default:
		err = types.NewError(types.ErrInvalidEnvironmentVariables, "unknown CNI command "+req.Command, "")
	}
	if err != nil {
		s.log.Warn("cni call failed", "command", req.Command, "container", req.ContainerID, "ifname", req.IfName, "took", time.Since(start), "err", err)
		return nil, err
	}
	s.log.Debug("cni call", "command", req.Command, "container", req.ContainerID, "ifname", req.IfName, "took", time.Since(start))
	return res, nil
}

// cniError is err as the CNI error a plugin returns: a *types.Error as it
// is; an API answer that retrying may change (conflict, rate limit,
// server error) and a timeout as ErrTryAgainLater, so that the runtime
// retries; anything else as code.
func cniError(code uint, msg string, err error) error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	var se *apiv1.StatusError
	switch {
	case errors.As(err, &se):
		if se.Code == http.StatusConflict || se.Code == http.StatusTooManyRequests || se.Code >= 500 {
			code = types.ErrTryAgainLater
		}
	case errors.Is(err, context.DeadlineExceeded):
		code = types.ErrTryAgainLater
	}
	return types.NewError(code, msg, err.Error())
}

// hostRef returns the owner reference the endpoints made here carry.
func (s *Server) hostRef(ctx context.Context) (apiv1.OwnerReference, error) {
	s.mu.Lock()
	uid := s.hostUID
	s.mu.Unlock()
	if uid == "" {
		o, err := s.cfg.API.Get(ctx, apiv1.KindHost, "", s.cfg.Host)
		if err != nil {
			return apiv1.OwnerReference{}, fmt.Errorf("read host %s: %w", s.cfg.Host, err)
		}
		uid = o.GetObjectMeta().UID
		s.mu.Lock()
		s.hostUID = uid
		s.mu.Unlock()
	}
	return apiv1.OwnerReference{Kind: apiv1.KindHost, Name: s.cfg.Host, UID: uid}, nil
}

// subnet returns the subnet tenant/name (read once; its CIDR and gateway
// are immutable).
func (s *Server) subnet(ctx context.Context, tenant, name string) (*subnetInfo, error) {
	key := tenant + "/" + name
	s.mu.Lock()
	si := s.subnets[key]
	s.mu.Unlock()
	if si != nil {
		return si, nil
	}
	o, err := s.cfg.API.Get(ctx, apiv1.KindSubnet, tenant, name)
	if err != nil {
		return nil, fmt.Errorf("read subnet %s: %w", key, err)
	}
	sn := o.(*apiv1.Subnet)
	_, cidr, err := net.ParseCIDR(sn.Spec.CIDR)
	if err != nil {
		return nil, fmt.Errorf("subnet %s: cidr %q: %w", key, sn.Spec.CIDR, err)
	}
	gw := net.ParseIP(sn.Spec.Gateway)
	if gw == nil { // the default: the first address after the network's
		gw = append(net.IP(nil), cidr.IP.To4()...)
		gw[3]++
	}
	si = &subnetInfo{uid: sn.Metadata.UID, vpc: sn.Spec.VPC, cidr: cidr, gateway: gw.To4()}
	s.mu.Lock()
	s.subnets[key] = si
	s.mu.Unlock()
	return si, nil
}

func (s *Server) status(ctx context.Context, _ *cnirpc.Request) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.cfg.API.Get(ctx, apiv1.KindHost, "", s.cfg.Host); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "the weft agent cannot reach the controller's API", err.Error())
	}
	return nil
}
