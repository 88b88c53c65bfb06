package controller

import (
	"context"
	"time"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
	"github.com/sagaops/saga-operator/internal/participants"
	"github.com/sagaops/saga-operator/internal/saga"
)

// send makes one participant call under its step's timeout (which overrides
// the Participant's), in a client span, and counts it in the step metrics.
// The saga reconciler and the consistency checker's redrive both call here.
func send(ctx context.Context, pc *participants.Client, m *Metrics, obj *sagav1.OrderSaga,
	ep participants.Endpoint, pol saga.StepPolicies, c *saga.Call) saga.Result {
	ep.Timeout = pol.Forward.Timeout
	if c.Direction == sagav1.Compensate {
		ep.Timeout = pol.Compensate.Timeout
	}
	ctx, span := startCallSpan(ctx, obj, c)
	start := time.Now()
	res := pc.Call(ctx, ep, participants.CallRequest{
		SagaNamespace: obj.Namespace,
		SagaName:      obj.Name,
		SagaUID:       string(obj.UID),
		Step:          c.Step,
		Action:        c.Action,
		Direction:     c.Direction,
		Attempt:       c.Attempt,
		Order:         obj.Spec.Order,
		Outputs:       c.Outputs,
	})
	endCallSpan(span, res)
	labels := []string{c.Participant, c.Action, string(c.Direction), string(res.Outcome)}
	m.StepCalls.WithLabelValues(labels...).Inc()
	m.StepDuration.WithLabelValues(labels...).Observe(time.Since(start).Seconds())
	return res
}
