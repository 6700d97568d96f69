package cniserver

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/cnirpc"
	apiv1 "github.com/weftnet/weft/api/v1"
)

// call is a parsed ADD, DEL or CHECK.
type call struct {
	req *cnirpc.Request
	nc  *NetConf
	att attachment
}

// parse checks what every call but GC and STATUS needs.
func parse(req *cnirpc.Request) (*call, error) {
	nc, err := parseNetConf(req.Config)
	if err != nil {
		return nil, err
	}
	if req.ContainerID == "" {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID is empty", "")
	}
	if err := checkIfName(req.IfName); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_IFNAME", err.Error())
	}
	return &call{req: req, nc: nc, att: attachment{network: nc.Name, containerID: req.ContainerID, ifName: req.IfName}}, nil
}

// add attaches the container: it creates the attachment's endpoint (or
// takes one from the warm pool), waits until the agent reports it Ready
// and programmed, and returns the CNI result. Whatever fails after the
// endpoint exists deletes it again.
func (s *Server) add(ctx context.Context, req *cnirpc.Request) (res json.RawMessage, err error) {
	c, err := parse(req)
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(req.Netns) {
		return nil, types.NewError(types.ErrInvalidNetNS, "CNI_NETNS must be an absolute path", req.Netns)
	}
	sel, err := c.nc.selection(s.cfg.Default)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	ip, mac, err := c.nc.requested()
	if err != nil {
		return nil, err
	}
	if rate := c.nc.RuntimeConfig.Bandwidth.rate(); rate > 0 {
		if sel.qosClass, err = s.bandwidthClass(ctx, sel.tenant, rate); err != nil {
			return nil, err
		}
	}
	if err := s.waitAdopted(ctx); err != nil {
		return nil, err
	}
	ep := s.indexed(c.att)
	if ep != nil && attachedTo(ep) != req.Netns {
		// Attached elsewhere: the runtime's latest word wins.
		if err := s.remove(ctx, ep); err != nil {
			return nil, cniError(types.ErrTryAgainLater, "replace the endpoint", err)
		}
		ep = nil
	}
	switch {
	case ep != nil && ep.Metadata.Annotations[AnnotationPool] != "":
		ep, err = s.pool.claim(ctx, c, sel, ep) // again
	case ep == nil && ip == "" && mac == "":
		ep, err = s.pool.claim(ctx, c, sel, nil)
	}
	if err != nil {
		return nil, err
	}
	if ep == nil {
		if ep, err = s.create(ctx, c, sel, ip, mac); err != nil {
			return nil, err
		}
		s.setIndex(c.att, ep)
	}
	defer func() {
		if err != nil {
			s.cleanup(ep)
		}
	}()
	id := ep.Metadata.Tenant + "/" + ep.Metadata.Name
	s.cfg.Tap.Known(ep)
	r, err := s.cfg.Tap.Wait(ctx, id, ep.Metadata.UID, ep.Metadata.Generation)
	switch {
	case err != nil:
		return nil, cniError(types.ErrTryAgainLater, fmt.Sprintf("endpoint %s was not programmed within %v", id, s.cfg.Timeout), err)
	case r.Phase == agent.PhaseFailed:
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("endpoint %s failed on this host", id), r.Message)
	}
	sn, err := s.subnet(ctx, sel.tenant, sel.subnet)
	if err != nil {
		return nil, cniError(types.ErrTryAgainLater, "read the subnet", err)
	}
	if sel.vpc != "" && sn.vpc != sel.vpc {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("subnet %s/%s is in VPC %q, not %q", sel.tenant, sel.subnet, sn.vpc, sel.vpc), "")
	}
	return s.result(c, ep, sn)
}

// create creates the endpoint of c's attachment, or finds the one an
// earlier ADD of the same attachment created (the runtime retries).
func (s *Server) create(ctx context.Context, c *call, sel *selection, ip, mac string) (*apiv1.Endpoint, error) {
	owner, err := s.hostRef(ctx)
	if err != nil {
		return nil, cniError(types.ErrTryAgainLater, "read this host's Host", err)
	}
	ep := &apiv1.Endpoint{
		TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindEndpoint},
		Metadata: apiv1.ObjectMeta{Name: c.att.endpointName(), Tenant: sel.tenant, Labels: sel.labels,
			Annotations:     annotations(c.att, c.req.Netns, c.req.Args, c.nc.RuntimeConfig.PodAnnotations),
			OwnerReferences: []apiv1.OwnerReference{owner}},
		Spec: apiv1.EndpointSpec{Subnet: sel.subnet, Host: s.cfg.Host, IP: ip, MAC: mac, Netns: c.req.Netns, QoSClass: sel.qosClass},
	}
	for try := 0; ; try++ {
		o, err := s.cfg.API.Create(ctx, ep)
		if err == nil {
			s.log.Info("endpoint created", "endpoint", ep.Metadata.Tenant+"/"+ep.Metadata.Name, "container", c.att.containerID, "ifname", c.att.ifName)
			return o.(*apiv1.Endpoint), nil
		}
		if !apiv1.IsAlreadyExists(err) || try > 0 {
			return nil, cniError(types.ErrInternal, "create the endpoint", err)
		}
		o, err = s.cfg.API.Get(ctx, apiv1.KindEndpoint, ep.Metadata.Tenant, ep.Metadata.Name)
		if apiv1.IsNotFound(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, cniError(types.ErrTryAgainLater, "read the existing endpoint", err)
		}
		old := o.(*apiv1.Endpoint)
		if !c.att.owns(old) {
			return nil, types.NewError(types.ErrInternal, fmt.Sprintf("endpoint %s/%s exists and is not this attachment's", ep.Metadata.Tenant, ep.Metadata.Name), "")
		}
		if old.Spec.Netns == c.req.Netns && old.Spec.Subnet == ep.Spec.Subnet && old.Spec.Host == s.cfg.Host {
			return old, nil // an earlier ADD of this attachment
		}
		// Attached elsewhere: the runtime's latest word wins.
		if _, err := s.cfg.API.Delete(ctx, apiv1.KindEndpoint, old.Metadata.Tenant, old.Metadata.Name); err != nil && !apiv1.IsNotFound(err) {
			return nil, cniError(types.ErrTryAgainLater, "replace the endpoint", err)
		}
	}
}

// attachedTo is the namespace the attachment of ep is in (a pool
// endpoint's spec.netns is its pin).
func attachedTo(ep *apiv1.Endpoint) string {
	if ns := ep.Metadata.Annotations[AnnotationNetns]; ns != "" {
		return ns
	}
	return ep.Spec.Netns
}

// owns says ep is the endpoint of a (by its annotations).
func (a attachment) owns(ep *apiv1.Endpoint) bool {
	an := ep.Metadata.Annotations
	return an[AnnotationNetwork] == a.network && an[AnnotationContainerID] == a.containerID && an[AnnotationIfName] == a.ifName
}

// cleanup deletes the endpoint of an ADD that failed.
func (s *Server) cleanup(ep *apiv1.Endpoint) {
	ctx, cancel := context.WithTimeout(s.life.Context(), 30*time.Second)
	defer cancel()
	if err := s.remove(ctx, ep); err != nil {
		s.log.Error("endpoint of a failed ADD not deleted; GC will", "endpoint", ep.Metadata.Tenant+"/"+ep.Metadata.Name, "err", err)
	}
}

// remove deletes ep (gone already is fine) and releases what the pool
// kept for it.
func (s *Server) remove(ctx context.Context, ep *apiv1.Endpoint) error {
	if _, err := s.cfg.API.Delete(ctx, apiv1.KindEndpoint, ep.Metadata.Tenant, ep.Metadata.Name); err != nil && !apiv1.IsNotFound(err) {
		return err
	}
	s.unindex(ep)
	s.pool.released(ep)
	s.log.Info("endpoint deleted", "endpoint", ep.Metadata.Tenant+"/"+ep.Metadata.Name)
	return nil
}

// result is the CNI result of an ADD: the interface in the container's
// namespace, its address with the subnet's prefix and gateway, a default
// route through the gateway, and the configuration's DNS.
func (s *Server) result(c *call, ep *apiv1.Endpoint, sn *subnetInfo) (json.RawMessage, error) {
	ip := net.ParseIP(ep.Status.IP).To4()
	if ip == nil {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("endpoint %s/%s has no IPv4 address", ep.Metadata.Tenant, ep.Metadata.Name), ep.Status.IP)
	}
	r := &types100.Result{
		CNIVersion: "1.1.0",
		Interfaces: []*types100.Interface{{Name: c.att.ifName, Mac: ep.Status.MAC, Sandbox: c.req.Netns}},
		IPs:        []*types100.IPConfig{{Interface: types100.Int(0), Address: net.IPNet{IP: ip, Mask: sn.cidr.Mask}, Gateway: sn.gateway}},
		Routes:     []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: sn.gateway}},
		DNS:        c.nc.DNS,
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "encode the result", err.Error())
	}
	return b, nil
}

// bandwidthClass maps a bandwidth request to the tenant's QoS class with
// the highest maxRate that does not exceed it: weft enforces bandwidth
// only through the classes the tenant's admins define. Without one the
// request is refused.
func (s *Server) bandwidthClass(ctx context.Context, tenant string, rate uint64) (string, error) {
	objs, _, err := s.cfg.API.List(ctx, apiv1.KindQoSClass, tenant, "")
	if err != nil {
		return "", cniError(types.ErrTryAgainLater, fmt.Sprintf("bandwidth: read the QoS classes of tenant %q", tenant), err)
	}
	best, bestRate := "", uint64(0)
	var offered []string
	for _, o := range objs {
		q := o.(*apiv1.QoSClass)
		r, err := q.Spec.MaxRate.BitsPerSecond()
		if err != nil || r == 0 {
			continue
		}
		offered = append(offered, fmt.Sprintf("%s (%s)", q.Metadata.Name, q.Spec.MaxRate))
		if r <= rate && (r > bestRate || r == bestRate && q.Metadata.Name < best) {
			best, bestRate = q.Metadata.Name, r
		}
	}
	if best == "" {
		slices.Sort(offered)
		return "", types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("bandwidth: tenant %q has no QoS class with a maxRate of at most %d bit/s", tenant, rate),
			"weft caps bandwidth only through the tenant's QoS classes; classes with a maxRate: "+cmp.Or(strings.Join(offered, ", "), "none"))
	}
	return best, nil
}
