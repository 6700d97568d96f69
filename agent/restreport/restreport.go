package restreport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/weftnet/weft/agent"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

// Reporter is an agent.Reporter over a REST client.
type Reporter struct {
	c   *client.Client
	now func() time.Time

	mu sync.Mutex
	// conds are the stored conditions of the endpoints reported, as the
	// last write or read returned them, so that a condition whose status
	// stays keeps its lastTransitionTime (apiv1.SetCondition) without a
	// read per report. Gone reports remove their endpoint's.
	conds map[string][]apiv1.Condition
}

var _ agent.Reporter = (*Reporter)(nil)

// New returns a Reporter that uses c. The caller closes c.
func New(c *client.Client) *Reporter {
	return &Reporter{c: c, now: time.Now, conds: map[string][]apiv1.Condition{}}
}

// maxInFlight bounds the status writes of one ReportEndpoints in flight.
const maxInFlight = 16

// Known records the stored conditions of an endpoint the caller has just
// created or read (ID "tenant/name"), so that its first report does not
// read them again.
func (r *Reporter) Known(id string, conds []apiv1.Condition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.conds[id]; !ok {
		r.conds[id] = slices.Clone(conds)
	}
}

// Condition reasons the Reporter writes.
const (
	ReasonProgrammed    = "Programmed"    // True: the data plane enforces it
	ReasonNotProgrammed = "NotProgrammed" // False: the message says why
)

// Register creates the Host host with spec.underlayIP underlayIP unless a
// Host of that name exists (an operator may have created it with more
// fields, which are left alone). Errors that retrying cannot fix wrap
// agent.ErrRejected.
func (r *Reporter) Register(ctx context.Context, host, underlayIP string) error {
	_, err := r.c.Get(ctx, apiv1.KindHost, "", host)
	switch {
	case err == nil:
		return nil
	case !apiv1.IsNotFound(err):
		return classify(fmt.Errorf("register host %q: look it up: %w", host, err))
	}
	h := &apiv1.Host{
		TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindHost},
		Metadata: apiv1.ObjectMeta{Name: host},
		Spec:     apiv1.HostSpec{UnderlayIP: underlayIP},
	}
	if _, err := r.c.Create(ctx, h); err != nil && !apiv1.IsAlreadyExists(err) {
		return classify(fmt.Errorf("register host %q: %w", host, err))
	}
	return nil
}

// ReportEndpoints writes each report into its endpoint's status, one
// merge patch each, up to maxInFlight at a time: netns, phase, message and the conditions
// PolicyProgrammed and QoSProgrammed (the first report of an endpoint
// reads its stored status first, to keep their lastTransitionTime). An
// endpoint that no longer exists is skipped, a Gone one too; a status that
// already says the same is not written again. It tries every report and returns the
// joined errors; the error wraps agent.ErrRejected only if every failure
// does.
func (r *Reporter) ReportEndpoints(ctx context.Context, reports []agent.EndpointReport) error {
	var (
		mu        sync.Mutex
		errs      []error
		retryable bool
		wg        sync.WaitGroup
		sem       = make(chan struct{}, maxInFlight)
	)
	// Several at a time: a burst of endpoints (containers starting) is
	// reported in a round trip or a few, not one after the other.
	for _, rep := range reports {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := r.report(ctx, rep); err != nil {
				err = classify(err)
				mu.Lock()
				retryable = retryable || !errors.Is(err, agent.ErrRejected)
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) == 0 {
		return nil
	}
	err := errors.Join(errs...)
	if !retryable {
		return err // every member wraps ErrRejected, so the join does too
	}
	return fmt.Errorf("report endpoint status: %w", stripRejected{err})
}

func (r *Reporter) report(ctx context.Context, rep agent.EndpointReport) error {
	tenant, name, ok := strings.Cut(rep.ID, "/")
	if !ok || tenant == "" || name == "" {
		return fmt.Errorf("report endpoint %q: %w: ID is not tenant/name", rep.ID, agent.ErrRejected)
	}
	r.mu.Lock()
	stored, known := r.conds[rep.ID]
	if rep.Gone {
		delete(r.conds, rep.ID)
	}
	r.mu.Unlock()
	if rep.Gone {
		return nil
	}
	if !known { // first report of this endpoint: read what is stored
		o, err := r.c.Get(ctx, apiv1.KindEndpoint, tenant, name)
		if apiv1.IsNotFound(err) {
			return nil // deleted meanwhile: nothing to report
		}
		if err != nil {
			return fmt.Errorf("report endpoint %s: read its status: %w", rep.ID, err)
		}
		stored = o.(*apiv1.Endpoint).Status.Conditions
	}
	conds := slices.Clone(stored)
	now := r.now()
	apiv1.SetCondition(&conds, condition(apiv1.ConditionPolicyProgrammed, rep.PolicyErr, rep.Generation), now)
	apiv1.SetCondition(&conds, condition(apiv1.ConditionQoSProgrammed, rep.QoSErr, rep.Generation), now)
	// Only the fields the agent owns, all of them (an empty one is
	// cleared); the rest of the status is the controller's. A status that
	// already says the same is not written again.
	o, err := r.c.PatchStatus(ctx, apiv1.KindEndpoint, tenant, name, map[string]any{
		"netns": rep.Netns, "phase": rep.Phase, "message": truncate(rep.Message), "conditions": conds,
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case apiv1.IsNotFound(err):
		delete(r.conds, rep.ID)
		return nil // deleted meanwhile: nothing to report
	case err != nil:
		delete(r.conds, rep.ID) // read it again next time
		return fmt.Errorf("report endpoint %s: %w", rep.ID, err)
	}
	r.conds[rep.ID] = o.(*apiv1.Endpoint).Status.Conditions
	return nil
}

// condition is a condition of type typ: True without an error, False with
// it as the message.
func condition(typ, errText string, generation int64) apiv1.Condition {
	if errText == "" {
		return apiv1.Condition{Type: typ, Status: apiv1.ConditionTrue, Reason: ReasonProgrammed, ObservedGeneration: generation}
	}
	return apiv1.Condition{Type: typ, Status: apiv1.ConditionFalse, Reason: ReasonNotProgrammed,
		Message: truncate(errText), ObservedGeneration: generation}
}

// truncate shortens s to apiv1.MaxMessageLen characters, which the API
// takes.
func truncate(s string) string {
	if utf8.RuneCountInString(s) <= apiv1.MaxMessageLen {
		return s
	}
	const more = "…"
	runes := []rune(s)
	return string(runes[:apiv1.MaxMessageLen-1]) + more
}

// classify wraps agent.ErrRejected around errors that retrying cannot fix:
// a 4xx answer other than a conflict, a timeout or a rate limit.
func classify(err error) error {
	var se *apiv1.StatusError
	if !errors.As(err, &se) || errors.Is(err, agent.ErrRejected) {
		return err
	}
	switch {
	case se.Code == http.StatusConflict, se.Code == http.StatusRequestTimeout, se.Code == http.StatusTooManyRequests:
		return err
	case se.Code >= 400 && se.Code <= 499:
		return fmt.Errorf("%w: %w", agent.ErrRejected, err)
	}
	return err
}

// stripRejected hides agent.ErrRejected inside a join that also holds
// retryable errors, so that the whole is retried.
type stripRejected struct{ err error }

func (s stripRejected) Error() string { return s.err.Error() }
