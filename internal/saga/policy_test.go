package saga

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

func TestDefaultPolicies(t *testing.T) {
	f := DefaultForwardPolicy()
	if f != (Policy{Timeout: 10 * time.Second, MaxAttempts: 5, InitialBackoff: 200 * time.Millisecond, MaxBackoff: 30 * time.Second, MaxDuration: 50 * time.Second}) {
		t.Fatalf("forward %+v", f)
	}
	c := DefaultCompensatePolicy()
	if c != (Policy{Timeout: 10 * time.Second, MaxAttempts: 0, InitialBackoff: 200 * time.Millisecond, MaxBackoff: 30 * time.Second, MaxDuration: 24 * time.Hour}) {
		t.Fatalf("compensate %+v", c)
	}
	if got := Policies(nil, nil, comp("a")); got != DefaultPolicies() {
		t.Fatalf("Policies with nothing set: %+v", got)
	}
}

func TestPoliciesMerge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout *metav1.Duration
		retry   *sagav1.RetryPolicy
		step    sagav1.Step
		want    StepPolicies
	}{
		{
			name:    "participant defaults",
			timeout: dur(5 * time.Second),
			retry:   &sagav1.RetryPolicy{MaxAttempts: ptr(int32(3)), InitialBackoff: dur(time.Second), MaxBackoff: dur(10 * time.Second)},
			step:    comp("a"),
			want: StepPolicies{
				Forward:    Policy{Timeout: 5 * time.Second, MaxAttempts: 3, InitialBackoff: time.Second, MaxBackoff: 10 * time.Second, MaxDuration: 15 * time.Second},
				Compensate: Policy{Timeout: 5 * time.Second, MaxAttempts: 0, InitialBackoff: time.Second, MaxBackoff: 10 * time.Second, MaxDuration: 24 * time.Hour},
			},
		},
		{
			name:    "step overrides field by field",
			timeout: dur(5 * time.Second),
			retry:   &sagav1.RetryPolicy{MaxAttempts: ptr(int32(3)), InitialBackoff: dur(time.Second), MaxDuration: dur(time.Minute)},
			step: func() sagav1.Step {
				s := comp("a")
				s.Timeout = dur(2 * time.Second)
				s.Retry = &sagav1.RetryPolicy{MaxAttempts: ptr(int32(8))}
				s.CompensationRetry = &sagav1.RetryPolicy{MaxAttempts: ptr(int32(4)), MaxBackoff: dur(5 * time.Second), MaxDuration: dur(time.Hour)}
				return s
			}(),
			want: StepPolicies{
				Forward:    Policy{Timeout: 2 * time.Second, MaxAttempts: 8, InitialBackoff: time.Second, MaxBackoff: 30 * time.Second, MaxDuration: time.Minute},
				Compensate: Policy{Timeout: 2 * time.Second, MaxAttempts: 4, InitialBackoff: time.Second, MaxBackoff: 5 * time.Second, MaxDuration: time.Hour},
			},
		},
		{
			name: "maxDuration follows the merged attempts and timeout",
			step: func() sagav1.Step {
				s := comp("a")
				s.Timeout = dur(5 * time.Second)
				s.Retry = &sagav1.RetryPolicy{MaxAttempts: ptr(int32(8))}
				return s
			}(),
			want: StepPolicies{
				Forward:    Policy{Timeout: 5 * time.Second, MaxAttempts: 8, InitialBackoff: 200 * time.Millisecond, MaxBackoff: 30 * time.Second, MaxDuration: 40 * time.Second},
				Compensate: Policy{Timeout: 5 * time.Second, MaxAttempts: 0, InitialBackoff: 200 * time.Millisecond, MaxBackoff: 30 * time.Second, MaxDuration: 24 * time.Hour},
			},
		},
		{
			name:  "maxBackoff raised to a larger initialBackoff",
			retry: &sagav1.RetryPolicy{MaxBackoff: dur(time.Second)},
			step: func() sagav1.Step {
				s := comp("a")
				s.Retry = &sagav1.RetryPolicy{InitialBackoff: dur(3 * time.Second)}
				return s
			}(),
			want: StepPolicies{
				Forward:    Policy{Timeout: 10 * time.Second, MaxAttempts: 5, InitialBackoff: 3 * time.Second, MaxBackoff: 3 * time.Second, MaxDuration: 50 * time.Second},
				Compensate: Policy{Timeout: 10 * time.Second, MaxAttempts: 0, InitialBackoff: 200 * time.Millisecond, MaxBackoff: time.Second, MaxDuration: 24 * time.Hour},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Policies(tc.timeout, tc.retry, tc.step)
			if got != tc.want {
				t.Fatalf("\ngot  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestWorstCaseStatusSize drives sagas to the largest status the bounds
// allow; the harness checks every decision's status against 16 KiB.
func TestWorstCaseStatusSize(t *testing.T) {
	var steps []sagav1.Step
	for i := range 32 {
		// 63 characters, the longest DNS label.
		name := fmt.Sprintf("%s-%02d", strings.Repeat(string(rune('a'+i%26)), 60), i)
		s := comp(name)
		s.Participant, s.Action, s.Compensation = strings.Repeat("p", 63), strings.Repeat("d", 63), strings.Repeat("u", 63)
		steps = append(steps, s)
	}
	nasty := func(r *Result) {
		r.Error = &sagav1.StepError{Code: strings.Repeat("<", 200), Message: strings.Repeat("<&\"\x01é", 400), HTTPStatus: 503}
	}
	maxSize := 0
	track := func(h *harness) {
		if n := StatusSize(h.st); n > maxSize {
			maxSize = n
		}
	}

	t.Run("16 outputs of 256 bytes per step", func(t *testing.T) {
		h := newHarness(t, newSpec(steps...))
		h.decide(nil)
		h.answer(OutcomeOK, func(r *Result) {
			r.Outputs = map[string]string{}
			for k := range 16 {
				r.Outputs[fmt.Sprintf("key-%02d", k)] = strings.Repeat("v", 256)
			}
		})
		track(h)
		// One step's worth is already over the saga's budget.
		h.expectTransition(steps[0].Name, sagav1.ReasonInvalidOutputs, true)
		h.expectStep(steps[0].Name, sagav1.StepCompensating)
		if h.st.CompensationReason != sagav1.ReasonInvalidOutputs {
			t.Fatalf("reason %s", h.st.CompensationReason)
		}
	})

	t.Run("everything at its limit", func(t *testing.T) {
		h := newHarness(t, newSpec(steps...))
		h.retry = strings.Repeat("<", 256)
		h.st = &sagav1.OrderSagaStatus{Conditions: []metav1.Condition{{
			Type: sagav1.ConsistentCondition, Status: metav1.ConditionUnknown, Reason: sagav1.ReasonCheckPending,
			Message: strings.Repeat("m", 300), LastTransitionTime: metav1.NewTime(t0),
		}}}
		h.decide(nil)
		// Forward: each step fails transiently, polls, then succeeds with
		// outputs that fill the budget exactly (32 x 128 bytes).
		for i := 0; i < 31; i++ {
			h.answer(OutcomeTransient, nasty)
			h.waitOut()
			h.answer(OutcomeAccepted)
			h.waitOut()
			h.answer(OutcomeOK, func(r *Result) { r.Outputs = map[string]string{"k": strings.Repeat("x", 120)} })
			track(h)
		}
		h.expectPhase(sagav1.SagaRunning)
		h.answer(OutcomeRejected, nasty)
		h.expectPhase(sagav1.SagaCompensating)
		// Compensation: transient then OK on each step; the first step refuses.
		for h.st.Phase == sagav1.SagaCompensating {
			h.answer(OutcomeTransient, nasty)
			h.waitOut()
			h.answer(OutcomeAccepted)
			h.waitOut()
			track(h)
			if h.st.CurrentStep == steps[0].Name {
				h.answer(OutcomeRejected, nasty)
				break
			}
			h.answer(OutcomeOK)
			track(h)
		}
		h.expectPhase(sagav1.SagaFailed)
		track(h)
		total := 0
		for _, s := range h.st.Steps {
			total += outputsSize(s.Outputs)
		}
		if total < MaxStatusOutputBytes-128 || total > MaxStatusOutputBytes {
			t.Fatalf("stored outputs %d bytes", total)
		}
		t.Logf("final status %d bytes with %d history entries", StatusSize(h.st), len(h.st.History))
	})

	t.Logf("largest status: %d bytes (target %d, limit %d)", maxSize, MaxStatusBytes, 16<<10)
	if maxSize >= 16<<10 {
		t.Fatalf("status reached %d bytes", maxSize)
	}
}

func TestTypicalStatusKeepsFullHistory(t *testing.T) {
	h := newHarness(t, newSpec(comp("create-order"), comp("process-payment"), comp("reserve-inventory"), comp("send-confirmation")))
	pol := DefaultPolicies()
	pol.Forward.MaxAttempts, pol.Forward.MaxDuration = 0, 0
	h.pol = allPolicies(h.spec, pol)
	h.decide(nil)
	for range 40 {
		h.answer(OutcomeTransient)
		h.waitOut()
	}
	if len(h.st.History) != MaxHistory {
		t.Fatalf("history %d", len(h.st.History))
	}
}
