package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

func (a *app) newTraceCmd() *cobra.Command {
	var (
		spec           apiv1.TraceSpec
		name, output   string
		timeout        time.Duration
		deleteWhenDone bool
	)
	cmd := &cobra.Command{
		Use:   "trace --from ENDPOINT --to ENDPOINT|IP",
		Short: "Trace a packet's path from an endpoint, hop by hop, as the hosts' kernels saw it",
		Long: `Trace the path of a packet from an endpoint of the tenant to another endpoint
or an address in the source's VPC. The command creates a Trace object, waits
until its status is complete and prints the merged path: every hop (source
veth, VPC router, policy verdict with the rule that decided, route,
encapsulation, underlay, remote decapsulation, remote policy, delivery) or
the drop and its reason, each with the host that observed it.

--mode probe (the default) injects one marked packet at the source
endpoint's interface; it is consumed at the last hop and never reaches an
application. --mode live tags the next --count real packets of the 5-tuple
instead, for at most --duration. The Trace object stays for its --ttl
(default 10m) unless --rm.`,
		Example: `  weft trace --tenant acme --from web-1 --to db-1 --proto tcp --dport 5432
  weft trace --tenant acme --from web-1 --to 10.0.9.9 -o json
  weft trace --tenant acme --from web-1 --to db-1 --proto udp --dport 53 --mode live --count 5`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.tenant == "" {
				return usageErrorf("traces are a tenant's: pass --tenant TENANT (or set WEFT_TENANT)")
			}
			if spec.From == "" || spec.To == "" {
				return usageErrorf("pass --from ENDPOINT and --to ENDPOINT|IP")
			}
			if err := checkFormat(output); err != nil {
				return err
			}
			if name == "" {
				name = randomName("trace")
			}
			tr := &apiv1.Trace{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindTrace},
				Metadata: apiv1.ObjectMeta{Name: name, Tenant: a.tenant}, Spec: spec}
			if timeout == 0 {
				timeout = 30 * time.Second
				if spec.Mode == apiv1.TraceLive {
					d, err := apiv1.ParseDuration(spec.Duration, apiv1.DefaultTraceDuration, apiv1.MaxTraceDuration)
					if err != nil {
						return usageErrorf("--duration %q: %v", spec.Duration, err)
					}
					timeout = d + 30*time.Second
				}
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			done, err := a.runTrace(cmd.Context(), cl, tr, timeout)
			if deleteWhenDone {
				// Also after an interrupt: a fresh context.
				ctx, cancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), 5*time.Second)
				defer cancel()
				if _, derr := cl.Delete(ctx, apiv1.KindTrace, a.tenant, name); derr != nil && !apiv1.IsNotFound(derr) {
					err = errors.Join(err, derr)
				}
			}
			if err != nil {
				return err
			}
			return a.printTrace(done, output)
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.From, "from", "", "source endpoint (of the tenant)")
	f.StringVar(&spec.To, "to", "", "destination endpoint of the tenant, or an IPv4 address in the source's VPC")
	f.StringVar(&spec.Proto, "proto", "", "tcp, udp or icmp (default icmp)")
	f.IntVar(&spec.DPort, "dport", 0, "destination port (tcp, udp)")
	f.IntVar(&spec.SPort, "sport", 0, "source port a live trace matches (default any)")
	f.StringVar(&spec.Mode, "mode", "", "probe (inject one marked packet, the default) or live (tag real packets)")
	f.IntVar(&spec.Count, "count", 0, "live mode: how many packets to tag (default 10)")
	f.StringVar(&spec.Duration, "duration", "", "live mode: for at most how long (default 30s)")
	f.StringVar(&spec.TTL, "ttl", "", "how long the Trace object is kept (default 10m)")
	f.StringVar(&name, "name", "", "name of the Trace object (default: trace- and a random suffix)")
	f.DurationVar(&timeout, "timeout", 0, "how long to wait for the result (default 30s; live: the duration + 30s)")
	f.BoolVar(&deleteWhenDone, "rm", false, "delete the Trace object when done")
	f.StringVarP(&output, "output", "o", formatTable, "output format: table, json or yaml")
	return cmd
}

// runTrace creates tr and waits until it is Completed or Failed.
func (a *app) runTrace(ctx context.Context, cl *client.Client, tr *apiv1.Trace, timeout time.Duration) (*apiv1.Trace, error) {
	if _, err := cl.Create(ctx, tr); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		o, err := cl.Get(ctx, apiv1.KindTrace, tr.Metadata.Tenant, tr.Metadata.Name)
		if err != nil {
			return nil, fmt.Errorf("trace %s: %w", tr.Metadata.Name, err)
		}
		got := o.(*apiv1.Trace)
		switch got.Status.Phase {
		case apiv1.PhaseCompleted:
			return got, nil
		case apiv1.PhaseFailed:
			return nil, fmt.Errorf("trace %s failed: %s", tr.Metadata.Name, got.Status.Message)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("trace %s: no result after %v (phase %s): %w", tr.Metadata.Name, timeout, orNone(got.Status.Phase), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (a *app) printTrace(tr *apiv1.Trace, format string) error {
	if format != formatTable {
		data, err := marshalObject(tr, format)
		if err != nil {
			return err
		}
		_, err = a.stdout.Write(data)
		return err
	}
	s := tr.Status
	result := s.Verdict
	if s.Reason != "" {
		result += " (" + s.Reason + ")"
	}
	fmt.Fprintf(a.stdout, "Trace %s: %s -> %s: %s\n", tr.Metadata.Name, traceEnd(s.Source, tr.Spec.From), traceEnd(s.Destination, tr.Spec.To), result)
	rows := make([][]string, 0, len(s.Hops))
	for i, h := range s.Hops {
		decided := strings.TrimSpace(h.Rule + " " + h.Reason)
		rows = append(rows, []string{strconv.Itoa(i + 1), h.Host, h.Point, h.Verdict, orNone(decided), traceDetail(h)})
	}
	return writeTable(a.stdout, []string{"#", "HOST", "POINT", "VERDICT", "RULE/REASON", "DETAIL"}, rows)
}

func traceEnd(e *apiv1.TraceEnd, spec string) string {
	if e == nil {
		return spec
	}
	s := e.IP
	if e.Endpoint != "" {
		s = e.Endpoint + " (" + e.IP + ")"
	}
	if e.Host != "" {
		s += " on " + e.Host
	}
	return s
}

// traceDetail is a hop's detail and its attributes in a fixed order.
func traceDetail(h apiv1.TraceHop) string {
	parts := []string{}
	if h.Detail != "" {
		parts = append(parts, h.Detail)
	}
	for _, k := range []string{"vni", "remoteHost", "outerSrc", "outerDst", "dscp"} {
		if v := h.Attrs[k]; v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	if h.Packet > 0 {
		parts = append(parts, "packet="+strconv.Itoa(h.Packet))
	}
	return orNone(strings.Join(parts, " "))
}

// randomName is prefix, a dash and 8 random hex digits.
func randomName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}
