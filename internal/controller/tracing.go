package controller

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
	"github.com/sagaops/saga-operator/internal/saga"
)

const tracerName = "github.com/sagaops/saga-operator"

// InjectTraceContext writes the W3C trace context of ctx (traceparent,
// tracestate) into a participant request's headers. With tracing off the
// span context is invalid and nothing is written.
func InjectTraceContext(ctx context.Context, h http.Header) {
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(h))
}

// startCallSpan starts the client span of one participant call.
func startCallSpan(ctx context.Context, obj *sagav1.OrderSaga, c *saga.Call) (context.Context, trace.Span) {
	return otel.Tracer(tracerName).Start(ctx, "saga "+string(c.Direction)+" "+c.Action,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("saga.namespace", obj.Namespace),
			attribute.String("saga.name", obj.Name),
			attribute.String("saga.uid", string(obj.UID)),
			attribute.String("saga.step", c.Step),
			attribute.String("saga.participant", c.Participant),
			attribute.String("saga.direction", string(c.Direction)),
			attribute.Int("saga.attempt", int(c.Attempt)),
		))
}

// endCallSpan records the outcome of the call on its span and ends it.
func endCallSpan(span trace.Span, res saga.Result) {
	span.SetAttributes(attribute.String("saga.outcome", string(res.Outcome)))
	if res.Outcome != saga.OutcomeOK && res.Outcome != saga.OutcomeAccepted && res.Error != nil {
		span.SetStatus(codes.Error, res.Error.Code)
	}
	span.End()
}
