package hostkey

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"

	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/auth"
	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/controller/store"
)

// EnrollRequest is the body of POST /apis/weft/v1/enroll.
type EnrollRequest struct {
	Host       string `json:"host"`
	UnderlayIP string `json:"underlayIP"`
}

// Enrolment is what an enrolled host's agent keeps: its key for the
// southbound, its API token (role agent) and the cluster CA.
type Enrolment struct {
	HostUID string `json:"hostUID"`
	HostKey string `json:"hostKey"` // hex
	Token   string `json:"token"`
	CA      string `json:"ca"` // PEM
}

// HostCreator creates Hosts (the registry).
type HostCreator interface {
	Create(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error)
}

// EnrollerConfig configures an Enroller.
type EnrollerConfig struct {
	Store    *store.Store
	Registry HostCreator
	Tokens   *auth.Tokens
	Keyring  *Keyring
	Sealer   *secrets.Sealer
	CA       []byte // PEM
}

// Enroller turns a bootstrap token into a host's credentials.
type Enroller struct{ cfg EnrollerConfig }

// NewEnroller returns an Enroller.
func NewEnroller(cfg EnrollerConfig) *Enroller { return &Enroller{cfg: cfg} }

// Enroll creates the Host if there is none, then, in one transaction that
// holds only while the bootstrap token is unused and the Host is the one
// just read, stores a new random key for the Host's UID, creates an agent
// token bound to that UID, deletes the bootstrap token and the Host's
// earlier agent tokens. A bootstrap token of req.Host may enrol once (a
// second try gets 401); a cluster admin may enrol any host (again), which
// replaces its key and token.
func (e *Enroller) Enroll(ctx context.Context, id *auth.Identity, req EnrollRequest) (Enrolment, error) {
	switch {
	case id.Role == auth.RoleBootstrap && id.Host == req.Host:
	case id.Role == auth.RoleClusterAdmin:
	default:
		return Enrolment{}, apiv1.NewForbidden("forbidden: a %s credential may not enrol this host", id.Role)
	}
	if _, err := netip.ParseAddr(req.UnderlayIP); err != nil && req.UnderlayIP != "" {
		return Enrolment{}, apiv1.NewBadRequest("underlayIP %q: not an IP address", req.UnderlayIP)
	}
	st := e.cfg.Store
	ref := apiv1.Ref{Kind: apiv1.KindHost, Name: req.Host}
	uid, created, err := e.readHost(ctx, ref)
	if err == nil && uid == "" {
		h := &apiv1.Host{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindHost},
			Metadata: apiv1.ObjectMeta{Name: req.Host}, Spec: apiv1.HostSpec{UnderlayIP: req.UnderlayIP}}
		if _, err = e.cfg.Registry.Create(ctx, h); err == nil || apiv1.IsAlreadyExists(err) {
			uid, created, err = e.readHost(ctx, ref)
		}
	}
	if err != nil {
		return Enrolment{}, err
	}
	if uid == "" {
		return Enrolment{}, apiv1.NewConflict("%s was deleted while enrolling: retry", ref)
	}
	tok, tokOp, err := e.cfg.Tokens.Prepare(auth.TokenRequest{Scope: auth.Scope{Role: auth.RoleAgent, Host: req.Host},
		Description: "enrolled host " + req.Host}, uid)
	if err != nil {
		return Enrolment{}, err
	}
	key := secrets.NewKey()
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(st.ObjectKey(ref)), "=", created)}
	ops := append(e.cfg.Tokens.DeleteOps(uid), PutOp(st, e.cfg.Sealer, uid, key), tokOp)
	if id.Role == auth.RoleBootstrap {
		cmp, del, ok := e.cfg.Tokens.Consume(id.TokenID)
		if !ok {
			return Enrolment{}, apiv1.NewUnauthorized("%v", auth.ErrUnauthenticated)
		}
		cmps, ops = append(cmps, cmp), append(ops, del)
	}
	resp, err := st.Client().Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return Enrolment{}, apiv1.NewStatus(http.StatusServiceUnavailable, apiv1.ReasonUnavailable, "storage unavailable: %v", err)
	}
	if !resp.Succeeded {
		if _, _, ok := e.cfg.Tokens.Consume(id.TokenID); id.Role == auth.RoleBootstrap && !ok {
			return Enrolment{}, apiv1.NewUnauthorized("%v", auth.ErrUnauthenticated)
		}
		return Enrolment{}, apiv1.NewConflict("%s or the bootstrap token changed while enrolling: retry", ref)
	}
	// This replica knows the key and the token before the agent uses them.
	if err := errors.Join(e.cfg.Keyring.wait(ctx, resp.Header.Revision), e.cfg.Tokens.Wait(ctx, resp.Header.Revision)); err != nil {
		return Enrolment{}, err
	}
	return Enrolment{HostUID: uid, HostKey: hex.EncodeToString(key), Token: tok.Secret, CA: string(e.cfg.CA)}, nil
}

// readHost reads the Host from etcd (not the cache, which may lag a Host
// another replica just made): its UID ("" if there is none) and creation
// revision.
func (e *Enroller) readHost(ctx context.Context, ref apiv1.Ref) (uid string, created int64, err error) {
	resp, err := e.cfg.Store.Client().Get(ctx, e.cfg.Store.ObjectKey(ref))
	if err != nil {
		return "", 0, apiv1.NewStatus(http.StatusServiceUnavailable, apiv1.ReasonUnavailable, "storage unavailable: %v", err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, nil
	}
	var h struct {
		Metadata struct {
			UID string `json:"uid"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &h); err != nil {
		return "", 0, fmt.Errorf("hostkey: decode %s: %w", ref, err)
	}
	return h.Metadata.UID, resp.Kvs[0].CreateRevision, nil
}

// DeleteOps returns the deletes of a Host's credentials, its key and its
// agent tokens, for the transaction that deletes the Host.
func DeleteOps(st *store.Store, tokens *auth.Tokens) func(h *apiv1.Host) []clientv3.Op {
	return func(h *apiv1.Host) []clientv3.Op {
		if h.Metadata.UID == "" {
			return nil
		}
		return append(tokens.DeleteOps(h.Metadata.UID), DeleteOp(st, h.Metadata.UID))
	}
}
