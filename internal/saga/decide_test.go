package saga

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

func TestHappyPath(t *testing.T) {
	h := newHarness(t, newSpec(comp("create-order"), comp("charge"), comp("reserve")))
	h.gen = 3

	d := h.decide(nil)
	h.expectCall("create-order", sagav1.Forward, 1)
	h.expectPhase(sagav1.SagaRunning)
	if d.Action.Call.Outputs != nil {
		t.Fatalf("first call carries outputs %v", d.Action.Call.Outputs)
	}
	if h.st.ObservedGeneration != 3 || !h.st.StartTime.Time.Equal(t0) {
		t.Fatalf("observedGeneration %d startTime %v", h.st.ObservedGeneration, h.st.StartTime)
	}
	if len(h.st.Steps) != 3 {
		t.Fatalf("steps %+v", h.st.Steps)
	}
	s := h.expectStep("create-order", sagav1.StepRunning)
	if s.Attempts != 1 || !s.StartTime.Time.Equal(t0) {
		t.Fatalf("step %+v", s)
	}
	h.expectStep("charge", sagav1.StepPending)
	h.expectStep("reserve", sagav1.StepPending)
	h.expectCondition(sagav1.ReconcilingCondition, metav1.ConditionTrue, sagav1.ReasonProgressing)
	h.expectCondition(sagav1.ReadyCondition, metav1.ConditionFalse, sagav1.ReasonProgressing)
	h.expectCondition(sagav1.StalledCondition, "", "")
	if len(d.Transitions) != 0 {
		t.Fatalf("starting emitted %v", d.Transitions)
	}

	h.advance(time.Second)
	d = h.answer(OutcomeOK)
	c := h.expectCall("charge", sagav1.Forward, 1)
	if !reflect.DeepEqual(c.Outputs, map[string]map[string]string{"create-order": {"ref": "create-order-1"}}) {
		t.Fatalf("outputs %v", c.Outputs)
	}
	s = h.expectStep("create-order", sagav1.StepSucceeded)
	if s.Outputs["ref"] != "create-order-1" || !s.CompletionTime.Time.Equal(t0.Add(time.Second)) {
		t.Fatalf("step %+v", s)
	}
	if s := h.expectStep("charge", sagav1.StepRunning); !s.StartTime.Time.Equal(t0.Add(time.Second)) || s.Attempts != 1 {
		t.Fatalf("step %+v", s)
	}
	if len(d.Transitions) != 1 || d.Transitions[0].Step != "create-order" || d.Transitions[0].Reason != sagav1.ReasonSucceeded {
		t.Fatalf("transitions %v", d.Transitions)
	}

	h.answer(OutcomeOK)
	h.expectCall("reserve", sagav1.Forward, 1)
	d = h.answer(OutcomeOK)
	h.expectKind(ActionDone)
	h.expectPhase(sagav1.SagaSucceeded)
	if h.st.CompletionTime == nil || h.st.CurrentStep != "" || h.st.Attempts != 0 {
		t.Fatalf("terminal status %+v", h.st)
	}
	h.expectCondition(sagav1.ReadyCondition, metav1.ConditionTrue, sagav1.ReasonSucceeded)
	h.expectCondition(sagav1.ReconcilingCondition, "", "")
	h.expectCondition(sagav1.StalledCondition, "", "")
	if len(d.Transitions) != 2 || d.Transitions[1].Step != "" || d.Transitions[1].Reason != sagav1.ReasonSucceeded {
		t.Fatalf("transitions %v", d.Transitions)
	}
	if len(h.st.History) != 4 {
		t.Fatalf("history %+v", h.st.History)
	}

	// Terminal: nothing to do, nothing changes.
	before := h.st.DeepCopy()
	h.advance(time.Hour)
	h.decide(nil)
	h.expectKind(ActionDone)
	if !apiequality.Semantic.DeepEqual(before, h.st) {
		t.Fatalf("terminal status changed")
	}
}

func TestTwoTransientsThenSuccess(t *testing.T) {
	h := newHarness(t, newSpec(comp("charge")))
	h.decide(nil)
	h.expectCall("charge", sagav1.Forward, 1)

	// Attempt 1 fails at t0+0.3s: backoff 200ms, stored with microseconds.
	h.advance(300 * time.Millisecond)
	d := h.answer(OutcomeTransient, func(r *Result) { r.Error.Message = "upstream down" })
	h.expectKind(ActionWait)
	s := h.step("charge")
	if s.Attempts != 2 || s.LastError == nil || s.LastError.Code != "HTTP503" || s.LastError.HTTPStatus != 503 {
		t.Fatalf("step after transient: %+v", s)
	}
	if want := t0.Add(500 * time.Millisecond); !s.NextAttemptTime.Time.Equal(want) || !d.Action.Until.Equal(want) {
		t.Fatalf("nextAttemptTime %v until %v, want %v", s.NextAttemptTime, d.Action.Until, want)
	}
	if s.NextAttemptTime.Time.Before(h.now.Add(200 * time.Millisecond)) {
		t.Fatalf("backoff not respected")
	}
	if h.st.Attempts != 2 || h.st.CurrentStep != "charge" {
		t.Fatalf("status attempts %d", h.st.Attempts)
	}
	h.expectCondition(sagav1.ReconcilingCondition, metav1.ConditionTrue, sagav1.ReasonRetrying)
	if len(d.Transitions) != 0 {
		t.Fatalf("a retry is not an event: %v", d.Transitions)
	}
	if last := h.st.History[len(h.st.History)-1]; last.Outcome != HistoryRetrying || last.Attempt != 1 {
		t.Fatalf("history %+v", last)
	}

	// Too early: still waiting, nothing changes.
	h.advance(100 * time.Millisecond)
	before := h.st.DeepCopy()
	h.decide(nil)
	h.expectKind(ActionWait)
	if !apiequality.Semantic.DeepEqual(before, h.st) {
		t.Fatalf("waiting changed the status")
	}

	h.waitOut()
	h.expectCall("charge", sagav1.Forward, 2)
	// Attempt 2 fails at t0+1.2s: backoff 400ms -> 1.6s.
	h.advance(700 * time.Millisecond)
	h.answer(OutcomeTransient)
	if s := h.step("charge"); s.Attempts != 3 || !s.NextAttemptTime.Time.Equal(t0.Add(1600*time.Millisecond)) {
		t.Fatalf("second retry: %+v", s)
	}
	h.waitOut()
	h.expectCall("charge", sagav1.Forward, 3)
	h.answer(OutcomeOK)
	h.expectKind(ActionDone)
	s = h.expectStep("charge", sagav1.StepSucceeded)
	if s.Attempts != 3 || s.NextAttemptTime != nil || s.LastError != nil {
		t.Fatalf("step %+v", s)
	}
}

func TestAttemptsExhaustedUnknownIsCompensatedInReverse(t *testing.T) {
	h := newHarness(t, newSpec(comp("a"), comp("b"), comp("c"), comp("d")))
	pol := DefaultPolicies()
	pol.Forward.MaxAttempts = 3
	pol.Forward.MaxDuration = 0
	h.pol = allPolicies(h.spec, pol)

	h.decide(nil)
	h.answer(OutcomeOK)
	h.answer(OutcomeOK)
	h.expectCall("c", sagav1.Forward, 1)
	for attempt := int32(1); attempt < 3; attempt++ {
		h.answer(OutcomeTransient)
		h.waitOut()
		h.expectCall("c", sagav1.Forward, attempt+1)
	}
	d := h.answer(OutcomeTransient)
	h.expectPhase(sagav1.SagaCompensating)
	h.expectStep("c", sagav1.StepCompensating) // Unknown, and the first to undo
	h.expectStep("d", sagav1.StepSkipped)
	if h.st.CompensationReason != sagav1.ReasonStepUnknown {
		t.Fatalf("reason %s", h.st.CompensationReason)
	}
	c := h.expectCall("c", sagav1.Compensate, 1)
	if len(c.Outputs) != 2 || c.Outputs["b"]["ref"] != "b-1" {
		t.Fatalf("compensating call outputs %v", c.Outputs)
	}
	h.expectCondition(sagav1.ReconcilingCondition, metav1.ConditionTrue, sagav1.ReasonCompensating)
	if len(d.Transitions) != 2 || d.Transitions[0].Reason != sagav1.ReasonStepUnknown || !d.Transitions[0].Warning ||
		d.Transitions[1].Reason != sagav1.ReasonCompensating || d.Transitions[1].Step != "" {
		t.Fatalf("transitions:\n%s", transitionsString(d.Transitions))
	}
	if s := h.step("c"); s.CompensationAttempts != 1 || !s.CompensationStartTime.Time.Equal(h.now) {
		t.Fatalf("step c %+v", s)
	}

	h.answer(OutcomeOK)
	h.expectCall("b", sagav1.Compensate, 1)
	h.answer(OutcomeOK)
	h.expectCall("a", sagav1.Compensate, 1)
	d = h.answer(OutcomeOK)
	h.expectKind(ActionDone)
	h.expectPhase(sagav1.SagaCompensated)
	for _, n := range []string{"a", "b", "c"} {
		if s := h.expectStep(n, sagav1.StepCompensated); s.CompletionTime == nil {
			t.Fatalf("step %s has no completionTime", n)
		}
	}
	h.expectStep("d", sagav1.StepSkipped)
	if got := strings.Join(h.compensateOrder(), ","); got != "c,b,a" {
		t.Fatalf("compensation order %s", got)
	}
	h.expectCondition(sagav1.ReadyCondition, metav1.ConditionFalse, sagav1.ReasonCompensated)
	h.expectCondition(sagav1.ReconcilingCondition, "", "")
	h.expectCondition(sagav1.StalledCondition, "", "")
	if h.st.CompletionTime == nil || h.st.CurrentStep != "" {
		t.Fatalf("terminal status %+v", h.st)
	}
	if last := d.Transitions[len(d.Transitions)-1]; last.Step != "" || last.Reason != sagav1.ReasonCompensated {
		t.Fatalf("last transition %+v", last)
	}
}

func TestMaxDurationExhausted(t *testing.T) {
	pol := DefaultPolicies()
	pol.Forward.MaxAttempts = 0 // unlimited: only the duration bounds it
	pol.Forward.MaxDuration = 5 * time.Second

	t.Run("transient", func(t *testing.T) {
		h := newHarness(t, newSpec(comp("a"), comp("b")))
		h.pol = allPolicies(h.spec, pol)
		h.decide(nil)
		h.answer(OutcomeOK)
		h.advance(time.Second)
		h.expectCall("b", sagav1.Forward, 1)
		for h.now.Before(t0.Add(6 * time.Second)) {
			h.answer(OutcomeTransient)
			h.expectKind(ActionWait)
			h.waitOut()
		}
		// b started at t0+1s; this answer comes more than 5s later.
		h.answer(OutcomeTransient)
		h.expectTransition("b", sagav1.ReasonStepUnknown, true)
		h.expectCall("b", sagav1.Compensate, 1)
	})

	t.Run("accepted", func(t *testing.T) {
		h := newHarness(t, newSpec(comp("a")))
		h.pol = allPolicies(h.spec, pol)
		h.decide(nil)
		h.answer(OutcomeAccepted, func(r *Result) { r.RetryAfter = 4 * time.Second })
		h.waitOut()
		h.expectCall("a", sagav1.Forward, 1)
		h.answer(OutcomeAccepted, func(r *Result) { r.RetryAfter = 4 * time.Second })
		h.waitOut()
		h.answer(OutcomeAccepted)
		h.expectTransition("a", sagav1.ReasonStepUnknown, true)
		h.expectCall("a", sagav1.Compensate, 1)
		h.answer(OutcomeOK)
		h.expectPhase(sagav1.SagaCompensated)
	})
}

func TestRejectedStepIsFailedNotCompensated(t *testing.T) {
	for _, status := range []int32{409, 422} {
		h := newHarness(t, newSpec(comp("a"), comp("b"), comp("c"), comp("d")))
		h.decide(nil)
		h.answer(OutcomeOK)
		h.answer(OutcomeOK)
		h.expectCall("c", sagav1.Forward, 1)
		d := h.answer(OutcomeRejected, func(r *Result) { r.Error.HTTPStatus = status })
		s := h.expectStep("c", sagav1.StepFailed)
		if s.LastError == nil || s.LastError.Code != "insufficient_funds" || s.LastError.HTTPStatus != status {
			t.Fatalf("lastError %+v", s.LastError)
		}
		if h.st.CompensationReason != sagav1.ReasonStepRejected {
			t.Fatalf("reason %s", h.st.CompensationReason)
		}
		if d.Transitions[0].Step != "c" || d.Transitions[0].Reason != sagav1.ReasonStepRejected || !d.Transitions[0].Warning {
			t.Fatalf("transitions:\n%s", transitionsString(d.Transitions))
		}
		h.expectStep("d", sagav1.StepSkipped)
		h.expectCall("b", sagav1.Compensate, 1)
		h.answer(OutcomeOK)
		h.expectCall("a", sagav1.Compensate, 1)
		h.answer(OutcomeOK)
		h.expectPhase(sagav1.SagaCompensated)
		h.expectStep("c", sagav1.StepFailed)
		h.expectStep("d", sagav1.StepSkipped)
		for _, c := range h.callsSeen {
			if c.Direction == sagav1.Compensate && (c.Step == "c" || c.Step == "d") {
				t.Fatalf("compensated %s", c.Step)
			}
		}
		if got := strings.Join(h.compensateOrder(), ","); got != "b,a" {
			t.Fatalf("order %s", got)
		}
	}
}

func TestFirstStepRejectedNothingToCompensate(t *testing.T) {
	h := newHarness(t, newSpec(comp("a"), comp("b")))
	h.decide(nil)
	h.answer(OutcomeRejected)
	h.expectKind(ActionDone)
	h.expectPhase(sagav1.SagaCompensated)
	h.expectStep("a", sagav1.StepFailed)
	h.expectStep("b", sagav1.StepSkipped)
}

func TestCompensationRetriedUntilSuccess(t *testing.T) {
	h := newHarness(t, newSpec(comp("a"), comp("b")))
	h.decide(nil)
	h.answer(OutcomeOK)
	h.answer(OutcomeRejected)
	h.expectCall("a", sagav1.Compensate, 1)
	// The default compensation policy has no attempt limit.
	for attempt := int32(1); attempt <= 12; attempt++ {
		h.answer(OutcomeTransient)
		s := h.step("a")
		if s.Phase != sagav1.StepCompensating || s.CompensationAttempts != attempt+1 {
			t.Fatalf("attempt %d: %+v", attempt, s)
		}
		h.waitOut()
		h.expectCall("a", sagav1.Compensate, attempt+1)
	}
	h.answer(OutcomeOK)
	h.expectPhase(sagav1.SagaCompensated)
	if s := h.expectStep("a", sagav1.StepCompensated); s.Attempts != 1 || s.CompensationAttempts != 13 || s.LastError != nil {
		t.Fatalf("step %+v", s)
	}
}

func TestCompensationRefusedFailsAndStalls(t *testing.T) {
	h := newHarness(t, newSpec(comp("create-order"), comp("charge"), comp("reserve")))
	h.decide(nil)
	h.answer(OutcomeOK)
	h.answer(OutcomeOK)
	h.answer(OutcomeRejected)
	h.expectCall("charge", sagav1.Compensate, 1)
	h.trans = nil
	d := h.answer(OutcomeRejected, func(r *Result) {
		r.Error = &sagav1.StepError{Code: "refund_window_closed", Message: "too late", HTTPStatus: 422}
	})
	h.expectKind(ActionDone)
	h.expectPhase(sagav1.SagaFailed)
	h.expectStep("charge", sagav1.StepCompensationFailed)
	h.expectStep("create-order", sagav1.StepSucceeded)
	if h.st.CurrentStep != "charge" || h.st.Attempts != 1 || h.st.CompletionTime == nil {
		t.Fatalf("failed status %+v", h.st)
	}
	h.expectCondition(sagav1.StalledCondition, metav1.ConditionTrue, sagav1.ReasonCompensationFailed)
	h.expectCondition(sagav1.ReadyCondition, metav1.ConditionFalse, sagav1.ReasonCompensationFailed)
	h.expectCondition(sagav1.ReconcilingCondition, "", "")
	if !strings.Contains(cond(h.st, sagav1.StalledCondition).Message, `"charge"`) {
		t.Fatalf("stalled message %q", cond(h.st, sagav1.StalledCondition).Message)
	}
	tr := h.expectTransition("charge", sagav1.ReasonCompensationFailed, true)
	if !strings.Contains(tr.Message, "refund_window_closed") {
		t.Fatalf("message %q", tr.Message)
	}
	tr = h.expectTransition("", sagav1.ReasonCompensationFailed, true)
	if !strings.Contains(tr.Message, `"charge"`) || !strings.Contains(tr.Message, sagav1.RetryAnnotation) {
		t.Fatalf("saga transition %q", tr.Message)
	}
	if len(d.Transitions) != 2 {
		t.Fatalf("transitions:\n%s", transitionsString(d.Transitions))
	}
	h.advance(time.Hour)
	h.decide(nil)
	h.expectKind(ActionDone)
}

func TestCompensationExhausted(t *testing.T) {
	t.Run("attempts", func(t *testing.T) {
		h := newHarness(t, newSpec(comp("a"), comp("b")))
		pol := DefaultPolicies()
		pol.Compensate.MaxAttempts = 2
		h.pol = allPolicies(h.spec, pol)
		h.decide(nil)
		h.answer(OutcomeOK)
		h.answer(OutcomeRejected)
		h.answer(OutcomeTransient)
		h.waitOut()
		h.expectCall("a", sagav1.Compensate, 2)
		h.answer(OutcomeTransient)
		h.expectPhase(sagav1.SagaFailed)
		h.expectStep("a", sagav1.StepCompensationFailed)
		h.expectCondition(sagav1.StalledCondition, metav1.ConditionTrue, sagav1.ReasonCompensationFailed)
		h.expectTransition("a", sagav1.ReasonCompensationFailed, true)
		if h.st.Attempts != 2 || h.st.CurrentStep != "a" {
			t.Fatalf("status %s/%d", h.st.CurrentStep, h.st.Attempts)
		}
	})
	t.Run("24h", func(t *testing.T) {
		h := newHarness(t, newSpec(comp("a"), comp("b")))
		h.decide(nil)
		h.answer(OutcomeOK)
		h.answer(OutcomeRejected)
		h.answer(OutcomeTransient)
		h.waitOut()
		h.advance(24*time.Hour + time.Second)
		h.answer(OutcomeTransient)
		h.expectPhase(sagav1.SagaFailed)
		h.expectStep("a", sagav1.StepCompensationFailed)
	})
}

func TestPivotForwardRecovery(t *testing.T) {
	h := newHarness(t, newSpec(comp("a"), pivot("ship"), comp("notify")))
	pol := DefaultPolicies()
	pol.Forward.MaxAttempts = 2
	pol.Forward.MaxDuration = 3 * time.Second
	h.pol = allPolicies(h.spec, pol)
	h.decide(nil)
	h.answer(OutcomeOK)
	h.expectCall("ship", sagav1.Forward, 1)
	h.answer(OutcomeOK)
	h.expectCall("notify", sagav1.Forward, 1)
	// Far beyond maxAttempts and maxDuration: retried anyway.
	for attempt := int32(1); attempt <= 8; attempt++ {
		h.answer(OutcomeTransient)
		h.expectStep("notify", sagav1.StepRunning)
		h.waitOut()
		h.expectCall("notify", sagav1.Forward, attempt+1)
	}
	h.answer(OutcomeAccepted)
	h.waitOut()
	h.answer(OutcomeOK)
	h.expectPhase(sagav1.SagaSucceeded)
	for _, c := range h.callsSeen {
		if c.Direction == sagav1.Compensate {
			t.Fatalf("compensated after a pivot: %+v", c)
		}
	}
}

func TestRejectionAfterPivotStalls(t *testing.T) {
	for _, o := range []Outcome{OutcomeRejected, OutcomeInvalidOutputs} {
		t.Run(string(o), func(t *testing.T) {
			h := newHarness(t, newSpec(comp("a"), pivot("ship"), comp("notify"), comp("bill")))
			h.decide(nil)
			h.answer(OutcomeOK)
			h.answer(OutcomeOK)
			h.expectCall("notify", sagav1.Forward, 1)
			h.answer(o)
			h.expectKind(ActionDone)
			h.expectPhase(sagav1.SagaFailed)
			if o == OutcomeRejected {
				h.expectStep("notify", sagav1.StepFailed)
			} else {
				h.expectStep("notify", sagav1.StepUnknown)
			}
			h.expectStep("a", sagav1.StepSucceeded)
			h.expectStep("ship", sagav1.StepSucceeded)
			h.expectStep("bill", sagav1.StepPending)
			h.expectCondition(sagav1.StalledCondition, metav1.ConditionTrue, sagav1.ReasonForwardRecoveryFailed)
			h.expectTransition("", sagav1.ReasonForwardRecoveryFailed, true)
			if h.st.CurrentStep != "notify" || h.st.CompensationReason != "" {
				t.Fatalf("status %+v", h.st)
			}
			if len(h.compensateOrder()) != 0 {
				t.Fatalf("compensated %v", h.compensateOrder())
			}

			// Re-drive: the failed step is called forward again, same key.
			h.retry = "1"
			h.decide(nil)
			h.expectPhase(sagav1.SagaRunning)
			h.expectCall("notify", sagav1.Forward, 1)
			if h.st.ObservedRetry != "1" || h.st.CompletionTime != nil {
				t.Fatalf("status %+v", h.st)
			}
			h.answer(OutcomeOK)
			h.expectCall("bill", sagav1.Forward, 1)
			h.answer(OutcomeOK)
			h.expectPhase(sagav1.SagaSucceeded)
		})
	}
}

func TestUnknownPivotStallsAndRedrivesForward(t *testing.T) {
	h := newHarness(t, newSpec(comp("a"), pivot("ship"), comp("notify")))
	pol := DefaultPolicies()
	pol.Forward.MaxAttempts = 1
	h.pol = allPolicies(h.spec, pol)
	h.decide(nil)
	h.answer(OutcomeOK)
	h.expectCall("ship", sagav1.Forward, 1)
	h.answer(OutcomeTransient)
	h.expectKind(ActionDone)
	h.expectPhase(sagav1.SagaFailed)
	h.expectStep("ship", sagav1.StepUnknown)
	h.expectStep("a", sagav1.StepSucceeded) // never undone while ship may have applied
	h.expectStep("notify", sagav1.StepSkipped)
	h.expectCondition(sagav1.StalledCondition, metav1.ConditionTrue, sagav1.ReasonCompensationFailed)
	if len(h.compensateOrder()) != 0 {
		t.Fatalf("compensated %v", h.compensateOrder())
	}

	h.retry = "again"
	h.decide(nil)
	h.expectCall("ship", sagav1.Forward, 1)
	h.expectStep("notify", sagav1.StepPending)
	if h.st.CompensationReason != "" {
		t.Fatalf("reason %s", h.st.CompensationReason)
	}
	h.answer(OutcomeOK)
	h.expectCall("notify", sagav1.Forward, 1)
	h.answer(OutcomeOK)
	h.expectPhase(sagav1.SagaSucceeded)

	// A rejected pivot has no effect: the steps before it are compensated.
	h2 := newHarness(t, newSpec(comp("a"), pivot("ship"), comp("notify")))
	h2.decide(nil)
	h2.answer(OutcomeOK)
	h2.answer(OutcomeRejected)
	h2.expectCall("a", sagav1.Compensate, 1)
	h2.answer(OutcomeOK)
	h2.expectPhase(sagav1.SagaCompensated)
}

func TestAcceptedPolling(t *testing.T) {
	h := newHarness(t, newSpec(comp("a")))
	h.decide(nil)
	d := h.answer(OutcomeAccepted, func(r *Result) { r.RetryAfter = 3 * time.Second })
	h.expectKind(ActionWait)
	s := h.step("a")
	if s.Attempts != 1 || !s.NextAttemptTime.Time.Equal(t0.Add(3*time.Second)) || !d.Action.Until.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("step %+v", s)
	}
	h.waitOut()
	h.expectCall("a", sagav1.Forward, 1)
	// No hint: 1s.
	h.answer(OutcomeAccepted)
	if s := h.step("a"); s.Attempts != 1 || !s.NextAttemptTime.Time.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("step %+v", s)
	}
	accepted := 0
	for _, e := range h.st.History {
		if e.Outcome == HistoryAccepted {
			accepted++
		}
	}
	if accepted != 1 {
		t.Fatalf("consecutive polls of one attempt recorded %d times", accepted)
	}
	h.waitOut()
	h.expectCall("a", sagav1.Forward, 1)
	h.answer(OutcomeOK)
	h.expectPhase(sagav1.SagaSucceeded)
	if s := h.step("a"); s.Attempts != 1 {
		t.Fatalf("attempts %d", s.Attempts)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	h := newHarness(t, newSpec(comp("a")))
	h.decide(nil)
	h.answer(OutcomeTransient, func(r *Result) { r.RetryAfter = 10 * time.Second })
	if s := h.step("a"); !s.NextAttemptTime.Time.Equal(t0.Add(10 * time.Second)) {
		t.Fatalf("nextAttemptTime %v", s.NextAttemptTime)
	}
	h.waitOut()
	// A hint shorter than the backoff does not shorten it.
	pol := DefaultPolicies()
	pol.Forward.InitialBackoff = 5 * time.Second
	h.pol = allPolicies(h.spec, pol)
	h.answer(OutcomeTransient, func(r *Result) { r.RetryAfter = time.Second })
	if s := h.step("a"); !s.NextAttemptTime.Time.Equal(h.now.Add(10 * time.Second)) {
		t.Fatalf("nextAttemptTime %v (now %v)", s.NextAttemptTime, h.now)
	}
}

func TestBackoff(t *testing.T) {
	p := Policy{InitialBackoff: 200 * time.Millisecond, MaxBackoff: 30 * time.Second}
	for retry := int32(1); retry <= 12; retry++ {
		base := 200 * time.Millisecond << (retry - 1)
		if base > 30*time.Second {
			base = 30 * time.Second
		}
		for _, tc := range []struct {
			jitter float64
			want   time.Duration
		}{
			{0.5, base},
			{0, max(base/2, 200*time.Millisecond)},
			{0.999, min(base/2+time.Duration(0.999*float64(base)), 30*time.Second)},
		} {
			got := Backoff(p, retry, tc.jitter)
			if got != tc.want {
				t.Errorf("retry %d jitter %v: %v, want %v", retry, tc.jitter, got, tc.want)
			}
			if got < p.InitialBackoff || got > p.MaxBackoff {
				t.Errorf("retry %d jitter %v: %v outside [initial, max]", retry, tc.jitter, got)
			}
		}
	}
	for _, retry := range []int32{0, -3, 1000, 1 << 30} {
		for _, j := range []float64{-1, 0, 0.5, 0.999, 1, 7} {
			if got := Backoff(p, retry, j); got < p.InitialBackoff || got > p.MaxBackoff {
				t.Errorf("retry %d jitter %v: %v", retry, j, got)
			}
		}
	}
	// Jitter from the input is used.
	h := newHarness(t, newSpec(comp("a")))
	h.jitter = func() float64 { return 0.999 }
	h.pol = allPolicies(h.spec, StepPolicies{Forward: Policy{MaxAttempts: 5, InitialBackoff: 4 * time.Second, MaxBackoff: time.Minute}})
	h.decide(nil)
	h.answer(OutcomeTransient)
	// 4s * (0.5 + 0.999) = 5.996s
	if s := h.step("a"); !s.NextAttemptTime.Time.Equal(t0.Add(5996 * time.Millisecond)) {
		t.Fatalf("nextAttemptTime %v", s.NextAttemptTime)
	}
}

func TestDeadline(t *testing.T) {
	spec := newSpec(comp("a"), comp("b"), comp("c"))
	spec.Deadline = dur(10 * time.Second)
	h := newHarness(t, spec)
	h.decide(nil)
	h.advance(2 * time.Second)
	h.answer(OutcomeOK)
	h.expectCall("b", sagav1.Forward, 1)
	h.advance(7 * time.Second)
	h.answer(OutcomeTransient, func(r *Result) { r.RetryAfter = 5 * time.Second })
	// The wait is cut at the deadline so that it acts on time.
	h.expectKind(ActionWait)
	if !h.last.Action.Until.Equal(t0.Add(10 * time.Second)) {
		t.Fatalf("until %v", h.last.Action.Until)
	}
	d := h.waitOut()
	h.expectPhase(sagav1.SagaCompensating)
	if h.st.CompensationReason != sagav1.ReasonDeadlineExceeded {
		t.Fatalf("reason %s", h.st.CompensationReason)
	}
	h.expectStep("b", sagav1.StepCompensating) // in flight: Unknown, compensated too
	h.expectStep("c", sagav1.StepSkipped)
	h.expectCall("b", sagav1.Compensate, 1)
	if len(d.Transitions) != 2 || d.Transitions[0].Step != "b" || d.Transitions[0].Reason != sagav1.ReasonStepUnknown {
		t.Fatalf("transitions:\n%s", transitionsString(d.Transitions))
	}
	h.answer(OutcomeOK)
	h.expectCall("a", sagav1.Compensate, 1)
	h.answer(OutcomeOK)
	h.expectPhase(sagav1.SagaCompensated)
}

func TestDeadlineIgnoredAfterPivot(t *testing.T) {
	spec := newSpec(pivot("ship"), comp("notify"))
	spec.Deadline = dur(10 * time.Second)
	h := newHarness(t, spec)
	h.decide(nil)
	h.answer(OutcomeOK)
	h.expectCall("notify", sagav1.Forward, 1)
	h.advance(11 * time.Second)
	d := h.decide(nil)
	h.expectCall("notify", sagav1.Forward, 1)
	if len(d.Transitions) != 1 || d.Transitions[0].Reason != sagav1.ReasonDeadlineExceeded || !strings.Contains(d.Transitions[0].Message, "ignored") {
		t.Fatalf("transitions:\n%s", transitionsString(d.Transitions))
	}
	if c := cond(h.st, sagav1.ReconcilingCondition); !strings.Contains(c.Message, "deadline ignored") {
		t.Fatalf("reconciling %q", c.Message)
	}
	// Said once.
	h.advance(time.Second)
	if d := h.decide(nil); len(d.Transitions) != 0 {
		t.Fatalf("transitions again:\n%s", transitionsString(d.Transitions))
	}
	h.answer(OutcomeTransient)
	if d := h.waitOut(); len(d.Transitions) != 0 {
		t.Fatalf("transitions again:\n%s", transitionsString(d.Transitions))
	}
	h.answer(OutcomeOK)
	h.expectPhase(sagav1.SagaSucceeded)
}

func TestCancel(t *testing.T) {
	t.Run("pending", func(t *testing.T) {
		spec := newSpec(comp("a"), comp("b"))
		spec.Cancel = true
		h := newHarness(t, spec)
		d := h.decide(nil)
		h.expectKind(ActionDone)
		h.expectPhase(sagav1.SagaCompensated)
		h.expectStep("a", sagav1.StepSkipped)
		h.expectStep("b", sagav1.StepSkipped)
		if h.st.CompensationReason != sagav1.ReasonCancelled || h.st.CompletionTime == nil || h.st.StartTime != nil {
			t.Fatalf("status %+v", h.st)
		}
		if len(d.Transitions) != 1 || d.Transitions[0].Reason != sagav1.ReasonCompensated {
			t.Fatalf("transitions:\n%s", transitionsString(d.Transitions))
		}
	})
	t.Run("pending after suspend", func(t *testing.T) {
		spec := newSpec(comp("a"))
		spec.Suspend = true
		h := newHarness(t, spec)
		h.decide(nil)
		h.expectKind(ActionSuspended)
		h.expectPhase(sagav1.SagaPending)
		spec.Cancel = true
		h.decide(nil)
		h.expectPhase(sagav1.SagaCompensated)
		h.expectStep("a", sagav1.StepSkipped)
	})
	t.Run("running", func(t *testing.T) {
		spec := newSpec(comp("a"), comp("b"), comp("c"))
		h := newHarness(t, spec)
		h.decide(nil)
		h.answer(OutcomeOK)
		h.expectCall("b", sagav1.Forward, 1)
		spec.Cancel = true
		h.gen++
		h.decide(nil)
		h.expectTransition("b", sagav1.ReasonStepUnknown, true)
		h.expectStep("b", sagav1.StepCompensating)
		h.expectStep("c", sagav1.StepSkipped)
		h.expectCall("b", sagav1.Compensate, 1)
		if h.st.CompensationReason != sagav1.ReasonCancelled || h.st.ObservedGeneration != 2 {
			t.Fatalf("status %+v", h.st)
		}
		h.expectTransition("", sagav1.ReasonCompensating, false) // asked for: not a warning
		h.answer(OutcomeOK)
		h.answer(OutcomeOK)
		h.expectPhase(sagav1.SagaCompensated)
		if got := strings.Join(h.compensateOrder(), ","); got != "b,a" {
			t.Fatalf("order %s", got)
		}
	})
	t.Run("result arrives after cancel", func(t *testing.T) {
		spec := newSpec(comp("a"), comp("b"), comp("c"))
		h := newHarness(t, spec)
		h.decide(nil)
		h.answer(OutcomeOK)
		h.expectCall("b", sagav1.Forward, 1)
		spec.Cancel = true
		h.answer(OutcomeOK)
		h.expectTransition("b", sagav1.ReasonSucceeded, false)
		h.expectStep("b", sagav1.StepCompensating)
		h.expectStep("c", sagav1.StepSkipped)
		h.expectCall("b", sagav1.Compensate, 1)
	})
	t.Run("terminal", func(t *testing.T) {
		spec := newSpec(comp("a"))
		h := newHarness(t, spec)
		h.decide(nil)
		h.answer(OutcomeOK)
		spec.Cancel = true
		h.decide(nil)
		h.expectPhase(sagav1.SagaSucceeded)
	})
}

func TestCancelWithPivot(t *testing.T) {
	spec := newSpec(comp("a"), pivot("ship"), comp("notify"))
	h := newHarness(t, spec)
	h.decide(nil)
	h.answer(OutcomeOK)
	h.expectCall("ship", sagav1.Forward, 1)
	spec.Cancel = true
	// The pivot is in flight: marking it Unknown would strand the saga; its
	// outcome decides.
	d := h.decide(nil)
	h.expectCall("ship", sagav1.Forward, 1)
	if len(d.Transitions) != 1 || !strings.Contains(d.Transitions[0].Message, "cancel deferred") {
		t.Fatalf("transitions:\n%s", transitionsString(d.Transitions))
	}
	d = h.answer(OutcomeOK)
	h.expectCall("notify", sagav1.Forward, 1)
	if len(d.Transitions) != 2 || !strings.Contains(d.Transitions[1].Message, "cancel ignored") || d.Transitions[1].Reason != sagav1.ReasonCancelled {
		t.Fatalf("transitions:\n%s", transitionsString(d.Transitions))
	}
	h.answer(OutcomeOK)
	h.expectPhase(sagav1.SagaSucceeded)

	// Rejected pivot under cancel: roll back.
	spec2 := newSpec(comp("a"), pivot("ship"), comp("notify"))
	h2 := newHarness(t, spec2)
	h2.decide(nil)
	h2.answer(OutcomeOK)
	spec2.Cancel = true
	h2.decide(nil)
	h2.answer(OutcomeRejected)
	h2.expectCall("a", sagav1.Compensate, 1)
}

func TestDeleting(t *testing.T) {
	h := newHarness(t, newSpec(comp("a"), comp("b")))
	h.decide(nil)
	h.answer(OutcomeOK)
	h.deleting = true
	h.decide(nil)
	h.expectCall("b", sagav1.Compensate, 1)
	if h.st.CompensationReason != sagav1.ReasonDeleted {
		t.Fatalf("reason %s", h.st.CompensationReason)
	}
	h.answer(OutcomeOK)
	h.answer(OutcomeOK)
	h.expectPhase(sagav1.SagaCompensated)

	h2 := newHarness(t, newSpec(comp("a")))
	h2.deleting = true
	h2.decide(nil)
	h2.expectKind(ActionDone)
	h2.expectPhase(sagav1.SagaCompensated)
	if h2.st.CompensationReason != sagav1.ReasonDeleted {
		t.Fatalf("reason %s", h2.st.CompensationReason)
	}
}

func TestSuspend(t *testing.T) {
	spec := newSpec(comp("a"), comp("b"), comp("c"))
	spec.Suspend = true
	h := newHarness(t, spec)
	h.decide(nil)
	h.expectKind(ActionSuspended)
	h.expectPhase(sagav1.SagaPending)
	h.expectCondition(sagav1.ReconcilingCondition, metav1.ConditionTrue, sagav1.ReasonSuspended)
	if h.st.StartTime != nil {
		t.Fatalf("started while suspended")
	}

	spec.Suspend = false
	h.decide(nil)
	h.expectCall("a", sagav1.Forward, 1)

	// Suspended with a call in flight: its result is recorded, no new call.
	spec.Suspend = true
	h.advance(time.Second)
	h.answer(OutcomeOK)
	h.expectKind(ActionSuspended)
	h.expectStep("a", sagav1.StepSucceeded)
	h.expectStep("b", sagav1.StepPending)
	if h.st.CurrentStep != "b" || h.st.Attempts != 0 {
		t.Fatalf("current %s/%d", h.st.CurrentStep, h.st.Attempts)
	}
	h.expectCondition(sagav1.ReconcilingCondition, metav1.ConditionTrue, sagav1.ReasonSuspended)

	// Nothing changes while suspended, cancel included.
	before := h.st.DeepCopy()
	spec.Cancel = true
	h.advance(time.Hour)
	h.decide(nil)
	h.expectKind(ActionSuspended)
	if !apiequality.Semantic.DeepEqual(before, h.st) {
		t.Fatalf("suspended status changed")
	}
	spec.Cancel = false

	spec.Suspend = false
	h.decide(nil)
	h.expectCall("b", sagav1.Forward, 1)
	if s := h.step("b"); !s.StartTime.Time.Equal(h.now) {
		t.Fatalf("b started %v", s.StartTime)
	}
	h.answer(OutcomeTransient)
	spec.Suspend = true
	h.waitOut()
	h.expectKind(ActionSuspended)
	spec.Suspend = false
	h.decide(nil)
	h.expectCall("b", sagav1.Forward, 2)
	h.answer(OutcomeRejected)
	h.expectCall("a", sagav1.Compensate, 1)
	spec.Suspend = true
	h.answer(OutcomeTransient)
	h.expectKind(ActionSuspended)
	if s := h.step("a"); s.CompensationAttempts != 2 || s.NextAttemptTime == nil {
		t.Fatalf("result not recorded while suspended: %+v", s)
	}
	h.advance(time.Hour)
	h.decide(nil)
	h.expectKind(ActionSuspended)
	h.expectCondition(sagav1.ReconcilingCondition, metav1.ConditionTrue, sagav1.ReasonSuspended)
	spec.Suspend = false
	h.decide(nil)
	h.expectCall("a", sagav1.Compensate, 2)
}

func TestRetryAnnotation(t *testing.T) {
	h := newHarness(t, newSpec(comp("a"), comp("b"), comp("c")))
	h.retry = "set-before-failure"
	h.decide(nil)
	if h.st.ObservedRetry != "set-before-failure" {
		t.Fatalf("observedRetry %q", h.st.ObservedRetry)
	}
	h.answer(OutcomeOK)
	h.answer(OutcomeOK)
	h.answer(OutcomeRejected)
	h.expectCall("b", sagav1.Compensate, 1)
	h.answer(OutcomeRejected)
	// A value set while running does not re-drive a later failure.
	h.expectPhase(sagav1.SagaFailed)
	h.expectKind(ActionDone)

	h.advance(time.Minute)
	h.retry = "2026-03-01T12:01:00Z"
	d := h.decide(nil)
	h.expectPhase(sagav1.SagaCompensating)
	c := h.expectCall("b", sagav1.Compensate, 1)
	if c.Outputs["b"]["ref"] != "b-1" {
		t.Fatalf("outputs %v", c.Outputs)
	}
	s := h.expectStep("b", sagav1.StepCompensating)
	if s.CompensationAttempts != 1 || !s.CompensationStartTime.Time.Equal(h.now) || h.st.CompletionTime != nil {
		t.Fatalf("step %+v", s)
	}
	if h.st.ObservedRetry != h.retry {
		t.Fatalf("observedRetry %q", h.st.ObservedRetry)
	}
	if len(d.Transitions) != 1 || d.Transitions[0].Warning {
		t.Fatalf("transitions:\n%s", transitionsString(d.Transitions))
	}
	h.expectCondition(sagav1.StalledCondition, "", "")
	h.expectCondition(sagav1.ReconcilingCondition, metav1.ConditionTrue, sagav1.ReasonCompensating)
	h.answer(OutcomeOK)
	h.expectCall("a", sagav1.Compensate, 1)
	h.answer(OutcomeOK)
	h.expectPhase(sagav1.SagaCompensated)

	// Recorded even when there is nothing to re-drive; a long value is hashed.
	h.retry = strings.Repeat("x", 300)
	h.decide(nil)
	h.expectPhase(sagav1.SagaCompensated)
	if !strings.HasPrefix(h.st.ObservedRetry, "sha256:") {
		t.Fatalf("observedRetry %q", h.st.ObservedRetry)
	}
}

func TestBlocked(t *testing.T) {
	t.Run("fresh", func(t *testing.T) {
		h := newHarness(t, newSpec(comp("a")))
		h.pol = nil
		h.decide(nil)
		h.expectKind(ActionBlocked)
		if c := h.last.Action.Call; c.Participant != "p-a" || c.Step != "a" || c.Attempt != 1 {
			t.Fatalf("call %+v", c)
		}
		h.expectPhase(sagav1.SagaPending)
		h.expectStep("a", sagav1.StepPending)
		h.expectCondition(sagav1.StalledCondition, metav1.ConditionTrue, sagav1.ReasonParticipantNotFound)
		h.expectCondition(sagav1.ReconcilingCondition, metav1.ConditionTrue, sagav1.ReasonPending)
		h.pol = allPolicies(h.spec, DefaultPolicies())
		h.decide(nil)
		h.expectCall("a", sagav1.Forward, 1)
		h.expectCondition(sagav1.StalledCondition, "", "")
	})
	t.Run("unavailable participant spends no attempt", func(t *testing.T) {
		h := newHarness(t, newSpec(comp("a"), comp("b")))
		h.decide(nil)
		h.unavailable = map[string]Blocker{"p-b": {Reason: sagav1.ReasonCredentialsNotFound, Message: "secret shop/token not found"}}
		h.answer(OutcomeOK)
		h.expectKind(ActionBlocked)
		if b := h.last.Action.Blocker; b == nil || b.Reason != sagav1.ReasonCredentialsNotFound {
			t.Fatalf("blocker %+v", b)
		}
		if s := h.expectStep("b", sagav1.StepPending); s.Attempts != 0 {
			t.Fatalf("attempts %d", s.Attempts)
		}
		h.expectCondition(sagav1.StalledCondition, metav1.ConditionTrue, sagav1.ReasonCredentialsNotFound)
		h.unavailable = nil
		h.decide(nil)
		h.expectCall("b", sagav1.Forward, 1)
		h.expectCondition(sagav1.StalledCondition, "", "")
	})
	t.Run("next step", func(t *testing.T) {
		h := newHarness(t, newSpec(comp("a"), comp("b")))
		delete(h.pol, "b")
		h.decide(nil)
		d := h.answer(OutcomeOK)
		h.expectKind(ActionBlocked)
		if c := d.Action.Call; c.Participant != "p-b" || c.Step != "b" || c.Direction != sagav1.Forward {
			t.Fatalf("call %+v", c)
		}
		h.expectStep("a", sagav1.StepSucceeded)
		h.expectStep("b", sagav1.StepPending)
		if h.st.CurrentStep != "b" {
			t.Fatalf("currentStep %s", h.st.CurrentStep)
		}
		h.expectCondition(sagav1.StalledCondition, metav1.ConditionTrue, sagav1.ReasonParticipantNotFound)
		if !strings.Contains(cond(h.st, sagav1.StalledCondition).Message, `"p-b"`) {
			t.Fatalf("message %q", cond(h.st, sagav1.StalledCondition).Message)
		}
		before := h.st.DeepCopy()
		h.advance(time.Hour)
		h.decide(nil)
		h.expectKind(ActionBlocked)
		if !apiequality.Semantic.DeepEqual(before, h.st) {
			t.Fatalf("blocked status changed")
		}
		h.pol["b"] = DefaultPolicies()
		h.decide(nil)
		h.expectCall("b", sagav1.Forward, 1)
		h.expectCondition(sagav1.StalledCondition, "", "")
	})
	t.Run("deadline", func(t *testing.T) {
		spec := newSpec(comp("a"), comp("b"))
		spec.Deadline = dur(10 * time.Second)
		h := newHarness(t, spec)
		delete(h.pol, "b")
		h.decide(nil)
		h.answer(OutcomeOK)
		h.expectKind(ActionBlocked)
		if !h.last.Action.Until.Equal(t0.Add(10 * time.Second)) {
			t.Fatalf("until %v", h.last.Action.Until)
		}
		h.now = h.last.Action.Until
		h.decide(nil)
		h.expectStep("b", sagav1.StepSkipped)
		h.expectCall("a", sagav1.Compensate, 1)
		if h.st.CompensationReason != sagav1.ReasonDeadlineExceeded {
			t.Fatalf("reason %s", h.st.CompensationReason)
		}
		h.expectCondition(sagav1.StalledCondition, "", "")
	})
	t.Run("in flight and compensation", func(t *testing.T) {
		h := newHarness(t, newSpec(comp("a"), comp("b")))
		h.decide(nil)
		h.answer(OutcomeOK)
		h.answer(OutcomeTransient)
		delete(h.pol, "b") // the participant went away
		h.waitOut()
		h.expectKind(ActionBlocked)
		if c := h.last.Action.Call; c.Step != "b" || c.Attempt != 2 {
			t.Fatalf("call %+v", c)
		}
		h.spec.Cancel = true
		h.decide(nil)
		h.expectPhase(sagav1.SagaCompensating)
		h.expectKind(ActionBlocked)
		if c := h.last.Action.Call; c.Step != "b" || c.Direction != sagav1.Compensate {
			t.Fatalf("call %+v", c)
		}
		h.expectStep("b", sagav1.StepUnknown)
		h.pol["b"] = DefaultPolicies()
		h.decide(nil)
		h.expectCall("b", sagav1.Compensate, 1)
	})
}

func TestCrashResume(t *testing.T) {
	h := newHarness(t, newSpec(comp("a"), comp("b")))
	h.decide(nil)
	first := *h.last.Action.Call
	// The process died after persisting the status, before or during the
	// call: the same call is made again, nothing is written.
	for range 3 {
		before := h.st.DeepCopy()
		h.advance(time.Minute)
		h.decide(nil)
		if !reflect.DeepEqual(*h.last.Action.Call, first) || !apiequality.Semantic.DeepEqual(before, h.st) {
			t.Fatalf("resume: %+v", h.last.Action)
		}
	}
	h.answer(OutcomeOK)
	h.answer(OutcomeTransient)
	h.waitOut()
	h.answer(OutcomeTransient)
	h.waitOut()
	h.expectCall("b", sagav1.Forward, 3)

	// Through a JSON round trip (what the API server stores).
	raw, err := json.Marshal(h.st)
	if err != nil {
		t.Fatal(err)
	}
	var stored sagav1.OrderSagaStatus
	if err := json.Unmarshal(raw, &stored); err != nil {
		t.Fatal(err)
	}
	in := h.input(nil)
	in.Status = &stored
	d := Decide(in)
	if d.Action.Kind != ActionCall || d.Action.Call.Step != "b" || d.Action.Call.Attempt != 3 {
		t.Fatalf("after round trip %+v", d.Action)
	}
	if !apiequality.Semantic.DeepEqual(&stored, d.Status) {
		t.Fatalf("round-tripped status rewritten")
	}
}

func TestIdempotence(t *testing.T) {
	// Every harness decision checks this; here the bare property, for a
	// status in each phase.
	h := newHarness(t, newSpec(comp("a"), comp("b")))
	var statuses []*sagav1.OrderSagaStatus
	h.decide(nil)
	statuses = append(statuses, h.st)
	h.answer(OutcomeTransient)
	statuses = append(statuses, h.st)
	h.waitOut()
	h.answer(OutcomeOK)
	statuses = append(statuses, h.st)
	h.answer(OutcomeRejected)
	statuses = append(statuses, h.st)
	h.answer(OutcomeOK)
	statuses = append(statuses, h.st)
	for i, st := range statuses {
		in := h.input(nil)
		in.Status = st
		a, b := Decide(in), Decide(in)
		if !apiequality.Semantic.DeepEqual(a.Status, b.Status) || !reflect.DeepEqual(a.Action, b.Action) {
			t.Fatalf("status %d: decisions differ", i)
		}
		in.Status = a.Status
		c := Decide(in)
		if !apiequality.Semantic.DeepEqual(a.Status, c.Status) || !reflect.DeepEqual(a.Action, c.Action) || len(c.Transitions) != 0 {
			t.Fatalf("status %d: not idempotent", i)
		}
	}
}

func TestStaleResultIgnored(t *testing.T) {
	h := newHarness(t, newSpec(comp("a"), comp("b")))
	h.decide(nil)
	h.answer(OutcomeOK)
	before := h.st.DeepCopy()
	for _, r := range []*Result{
		{Step: "a", Direction: sagav1.Forward, Outcome: OutcomeRejected},
		{Step: "b", Direction: sagav1.Compensate, Outcome: OutcomeOK},
		{Step: "zzz", Direction: sagav1.Forward, Outcome: OutcomeOK},
	} {
		h.decide(r)
		h.expectCall("b", sagav1.Forward, 1)
		if !apiequality.Semantic.DeepEqual(before, h.st) {
			t.Fatalf("stale result %+v recorded", r)
		}
	}
	// A result while the step waits for its next attempt is stale too.
	h.answer(OutcomeTransient)
	before = h.st.DeepCopy()
	h.decide(&Result{Step: "b", Direction: sagav1.Forward, Outcome: OutcomeTransient})
	if !apiequality.Semantic.DeepEqual(before, h.st) {
		t.Fatalf("result during backoff recorded")
	}
}

func TestInvalidOutputs(t *testing.T) {
	cases := map[string]func(*Result){
		"classified by the client": func(r *Result) {
			r.Outcome = OutcomeInvalidOutputs
			r.Error = &sagav1.StepError{Code: "InvalidOutputs", Message: "17 outputs"}
		},
		"too many keys": func(r *Result) {
			r.Outputs = map[string]string{}
			for i := range 17 {
				r.Outputs[string(rune('a'+i))] = "v"
			}
		},
		"long value": func(r *Result) { r.Outputs = map[string]string{"k": strings.Repeat("v", 257)} },
		"long key":   func(r *Result) { r.Outputs = map[string]string{strings.Repeat("k", 64): "v"} },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, newSpec(comp("a"), comp("b"), comp("c")))
			h.decide(nil)
			h.answer(OutcomeOK)
			h.expectCall("b", sagav1.Forward, 1)
			h.answer(OutcomeOK, mod)
			s := h.expectStep("b", sagav1.StepCompensating) // Unknown, then first to undo
			if s.LastError == nil || s.LastError.Code != sagav1.ReasonInvalidOutputs || s.Outputs != nil {
				t.Fatalf("step %+v", s)
			}
			if h.st.CompensationReason != sagav1.ReasonInvalidOutputs {
				t.Fatalf("reason %s", h.st.CompensationReason)
			}
			h.expectTransition("b", sagav1.ReasonInvalidOutputs, true)
			h.expectCall("b", sagav1.Compensate, 1)
			h.answer(OutcomeOK)
			h.expectCall("a", sagav1.Compensate, 1)
			// A 200 to a compensation is Compensated whatever its outputs.
			h.answer(OutcomeInvalidOutputs)
			h.expectPhase(sagav1.SagaCompensated)
			// Rolled back, but the participant needs a person.
			h.expectCondition(sagav1.StalledCondition, metav1.ConditionTrue, sagav1.ReasonInvalidOutputs)
		})
	}
}

func TestOutputsBudget(t *testing.T) {
	var steps []sagav1.Step
	for i := range 4 {
		steps = append(steps, comp(string(rune('a'+i))))
	}
	h := newHarness(t, newSpec(steps...))
	big := func(r *Result) {
		r.Outputs = map[string]string{}
		for i := range 6 {
			r.Outputs[string(rune('k'+i))] = strings.Repeat("x", 250)
		}
	}
	h.decide(nil)
	h.answer(OutcomeOK, big) // ~1.6 KiB
	h.answer(OutcomeOK, big) // ~3.1 KiB
	h.expectCall("c", sagav1.Forward, 1)
	h.answer(OutcomeOK, big) // would be ~4.7 KiB
	s := h.expectStep("c", sagav1.StepCompensating)
	if !strings.Contains(s.LastError.Message, "budget") {
		t.Fatalf("lastError %+v", s.LastError)
	}
	total := 0
	for _, s := range h.st.Steps {
		total += outputsSize(s.Outputs)
	}
	if total > MaxStatusOutputBytes {
		t.Fatalf("stored outputs %d bytes", total)
	}
}

func TestObservedGeneration(t *testing.T) {
	h := newHarness(t, newSpec(comp("a")))
	h.decide(nil)
	if h.st.ObservedGeneration != 1 {
		t.Fatalf("observedGeneration %d", h.st.ObservedGeneration)
	}
	// A spec change the saga does not act on is still observed (kstatus
	// reads observedGeneration), once.
	h.gen = 2
	h.decide(nil)
	if h.st.ObservedGeneration != 2 {
		t.Fatalf("observedGeneration %d", h.st.ObservedGeneration)
	}
	h.expectCondition(sagav1.ReadyCondition, metav1.ConditionFalse, sagav1.ReasonProgressing)
}

func TestHistoryBounded(t *testing.T) {
	h := newHarness(t, newSpec(comp("a")))
	pol := DefaultPolicies()
	pol.Forward.MaxAttempts = 0
	pol.Forward.MaxDuration = 0
	h.pol = allPolicies(h.spec, pol)
	h.decide(nil)
	long := strings.Repeat("é<", 400) // 1200 bytes raw, more escaped
	for range 40 {
		h.answer(OutcomeTransient, func(r *Result) { r.Error.Message = long })
		h.waitOut()
	}
	if len(h.st.History) != MaxHistory {
		t.Fatalf("history %d", len(h.st.History))
	}
	if h.st.History[MaxHistory-1].Attempt != 40 || h.st.History[0].Attempt != 40-MaxHistory+1 {
		t.Fatalf("kept the wrong entries: %d..%d", h.st.History[0].Attempt, h.st.History[MaxHistory-1].Attempt)
	}
	e := h.step("a").LastError
	raw, _ := json.Marshal(e.Message)
	if len(raw)-2 > MaxErrorMessageBytes || !strings.HasSuffix(e.Message, "…") || !strings.HasPrefix(e.Message, "é<é<") {
		t.Fatalf("lastError message %d bytes encoded: %q", len(raw)-2, e.Message)
	}
	for _, e := range h.st.History {
		raw, _ := json.Marshal(e.Message)
		if len(raw)-2 > MaxHistoryMessageBytes {
			t.Fatalf("history message %d bytes", len(raw)-2)
		}
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"0123456789abc", 10, "0123456…"},
		{"ééééé", 8, "éé…"}, // 2 bytes each; 3 for the ellipsis
		{"a\nb\x00c", 10, "a b c"},
		{"\xff\xfeok", 20, "\uFFFDok"},
		{"<<<<", 12, "<…"},
		{"abc", 2, ""},
	} {
		got := Truncate(tc.in, tc.max)
		if got != tc.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func TestSetConditions(t *testing.T) {
	consistent := metav1.Condition{Type: sagav1.ConsistentCondition, Status: metav1.ConditionTrue, Reason: sagav1.ReasonConsistent,
		LastTransitionTime: metav1.NewTime(t0.Add(-time.Hour)), ObservedGeneration: 1}
	st := &sagav1.OrderSagaStatus{
		Phase: sagav1.SagaRunning, CurrentStep: "a", Attempts: 1,
		Steps:      []sagav1.StepStatus{{Name: "a", Phase: sagav1.StepRunning, Attempts: 1}},
		Conditions: []metav1.Condition{consistent},
	}
	call := Action{Kind: ActionCall, Call: &Call{Step: "a", Participant: "p-a", Direction: sagav1.Forward, Attempt: 1}}
	SetConditions(st, 2, t0, call)
	rec := cond(st, sagav1.ReconcilingCondition)
	if rec == nil || rec.Status != metav1.ConditionTrue || rec.Reason != sagav1.ReasonProgressing || rec.ObservedGeneration != 2 || !rec.LastTransitionTime.Time.Equal(t0) {
		t.Fatalf("reconciling %+v", rec)
	}
	if c := cond(st, sagav1.ReadyCondition); c.Status != metav1.ConditionFalse || c.Reason != sagav1.ReasonProgressing {
		t.Fatalf("ready %+v", c)
	}

	// Same status later: nothing moves.
	before := st.DeepCopy()
	SetConditions(st, 2, t0.Add(time.Hour), call)
	if !apiequality.Semantic.DeepEqual(before, st) {
		t.Fatalf("conditions changed on a repeat")
	}

	// Blocked: Stalled with the participant's name.
	SetConditions(st, 2, t0.Add(time.Hour), Action{Kind: ActionBlocked, Call: call.Call})
	if c := cond(st, sagav1.StalledCondition); c == nil || c.Reason != sagav1.ReasonParticipantNotFound || !strings.Contains(c.Message, `"p-a"`) {
		t.Fatalf("stalled %+v", c)
	}

	st.Phase = sagav1.SagaSucceeded
	SetConditions(st, 2, t0.Add(2*time.Hour), Action{Kind: ActionDone})
	if c := cond(st, sagav1.ReadyCondition); c.Status != metav1.ConditionTrue || !c.LastTransitionTime.Time.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("ready %+v", c)
	}
	if cond(st, sagav1.ReconcilingCondition) != nil || cond(st, sagav1.StalledCondition) != nil {
		t.Fatalf("conditions %+v", st.Conditions)
	}
	if c := cond(st, sagav1.ConsistentCondition); !reflect.DeepEqual(*c, consistent) {
		t.Fatalf("consistent touched: %+v", c)
	}
}
