package saga

import (
	"testing"
	"time"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// BenchmarkDecideHappyPath runs a whole 4-step saga through Decide: one
// decision to start and one per call result. It reports decisions per second
// of one core, the ceiling the state machine puts on saga throughput.
func BenchmarkDecideHappyPath(b *testing.B) {
	spec := newSpec(comp("create-order"), comp("process-payment"), comp("reserve-inventory"), comp("send-confirmation"))
	pol := allPolicies(spec, DefaultPolicies())
	outputs := map[string]string{"ref": "r-1"}
	decisions := 0
	b.ReportAllocs()
	for b.Loop() {
		status := &sagav1.OrderSagaStatus{}
		now := t0
		var res *Result
		for {
			d := Decide(Input{Spec: spec, Status: status, Generation: 1, Now: now, Policies: pol, Result: res})
			decisions++
			status = d.Status
			if d.Action.Kind != ActionCall {
				break
			}
			now = now.Add(time.Millisecond)
			res = &Result{Step: d.Action.Call.Step, Direction: d.Action.Call.Direction, Outcome: OutcomeOK, Outputs: outputs}
		}
		if status.Phase != sagav1.SagaSucceeded {
			b.Fatalf("phase %s", status.Phase)
		}
	}
	b.ReportMetric(float64(decisions)/b.Elapsed().Seconds(), "decisions/s")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sagas/s")
}
