package controller

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

var _ = Describe("Tracing", func() {
	It("sends each participant the W3C trace context of the call's span", func() {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		otel.SetTracerProvider(tp)
		otel.SetTextMapPropagator(propagation.TraceContext{})
		DeferCleanup(func() {
			// Back to tracing off. (The globals cannot be restored to the
			// delegating defaults once set.)
			otel.SetTracerProvider(noop.NewTracerProvider())
			otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
		})

		shard := newShard()
		runManager(shard, nil)
		s := newShop(shard, nil)
		o := s.saga("traced", nil)
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaSucceeded))

		spans := map[string]string{} // traceparent -> span name
		for _, sp := range rec.Ended() {
			sc := sp.SpanContext()
			spans[fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())] = sp.Name()
		}
		calls := 0
		for _, r := range s.srv.Requests() {
			if r.Body.SagaUID != string(o.UID) {
				continue
			}
			calls++
			Expect(spans).To(HaveKeyWithValue(r.Traceparent, "saga forward "+r.Body.Action), r.Path)
		}
		Expect(calls).To(Equal(4))
	})
})
