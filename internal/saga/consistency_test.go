package saga

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// endedStatus is the log of a saga that ended in phase sp with its steps in
// the given phases (in spec order); every step that ran forward produced
// outputs {"ref": "<step>-out"}.
func endedStatus(spec *sagav1.OrderSagaSpec, sp sagav1.SagaPhase, phases ...sagav1.StepPhase) *sagav1.OrderSagaStatus {
	st := &sagav1.OrderSagaStatus{Phase: sp}
	for i, s := range spec.Steps {
		ss := sagav1.StepStatus{Name: s.Name, Phase: phases[i], Attempts: 1}
		switch phases[i] {
		case sagav1.StepSucceeded, sagav1.StepCompensated, sagav1.StepCompensationFailed, sagav1.StepCompensating:
			ss.Outputs = map[string]string{"ref": s.Name + "-out"}
		}
		if phases[i] == sagav1.StepCompensated || phases[i] == sagav1.StepCompensationFailed {
			ss.CompensationAttempts = 2
		}
		st.Steps = append(st.Steps, ss)
	}
	return st
}

// TestCheckConsistencyOneStep runs every (outcome, step phase, answer)
// combination on a one-step saga against the rules written out as a table.
func TestCheckConsistencyOneStep(t *testing.T) {
	type rule struct {
		want    string // "applied", "undone", or "" for no verdict
		redrive sagav1.Direction
	}
	rules := map[sagav1.SagaPhase]map[sagav1.StepPhase]rule{
		sagav1.SagaSucceeded: {
			sagav1.StepSucceeded: {"applied", sagav1.Forward},
		},
		sagav1.SagaCompensated: {
			sagav1.StepCompensated: {"undone", sagav1.Compensate},
			sagav1.StepSkipped:     {"undone", ""}, // never called: never re-driven
			sagav1.StepFailed:      {"undone", ""}, // rejected: its compensation was never called
		},
		sagav1.SagaFailed: {
			sagav1.StepSucceeded:          {"applied", sagav1.Forward},
			sagav1.StepCompensated:        {"undone", sagav1.Compensate},
			sagav1.StepCompensationFailed: {"", ""}, // the stalled step
			sagav1.StepFailed:             {"", ""},
			sagav1.StepUnknown:            {"", ""},
			sagav1.StepSkipped:            {"", ""},
		},
	}
	answers := map[string]*StepAnswer{
		"applied":      {State: StateApplied},
		"compensated":  {State: StateCompensated},
		"none":         {State: StateNone},
		"left out":     {State: ""},
		"odd state":    {State: "pending"},
		"unreachable":  {Err: AnswerUnreachable},
		"not found":    {Err: AnswerNotSupported},
		"not answered": nil, // missing from the map
	}
	for sp, byStep := range rules {
		for ph, r := range byStep {
			for name, a := range answers {
				t.Run(fmt.Sprintf("%s/%s/%s", sp, ph, name), func(t *testing.T) {
					spec := newSpec(comp("charge"))
					st := endedStatus(spec, sp, ph)
					in := map[string]StepAnswer{}
					if a != nil {
						in["charge"] = *a
					}
					v := CheckConsistency(spec, st, in)

					// What the table says.
					var (
						status  = metav1.ConditionTrue
						reason  = sagav1.ReasonConsistent
						kind    string
						redrive sagav1.Direction
					)
					state := ""
					if a != nil {
						state = a.State
					}
					if state == "" {
						state = StateNone
					}
					switch {
					case r.want == "":
					case a == nil || a.Err == AnswerUnreachable:
						status, reason = metav1.ConditionUnknown, sagav1.ReasonParticipantUnreachable
					case a.Err == AnswerNotSupported:
						status, reason = metav1.ConditionUnknown, sagav1.ReasonQueryNotSupported
					case r.want == "applied" && state != StateApplied:
						kind, redrive = sagav1.ReasonStepNotApplied, r.redrive
					case r.want == "undone" && state != StateCompensated && state != StateNone:
						kind, redrive = sagav1.ReasonStepNotCompensated, r.redrive
					}
					if kind != "" {
						status, reason = metav1.ConditionFalse, kind
					}

					if v.Status != status || v.Reason != reason {
						t.Fatalf("verdict %s/%s, want %s/%s (%s)", v.Status, v.Reason, status, reason, v.Message)
					}
					if kind == "" {
						if len(v.Violations) != 0 || len(v.Redrive) != 0 {
							t.Fatalf("violations %+v redrive %+v", v.Violations, v.Redrive)
						}
					} else {
						want := Violation{Step: "charge", Participant: "p-charge", Kind: kind, Actual: state,
							Expected: map[string]string{sagav1.ReasonStepNotApplied: "applied", sagav1.ReasonStepNotCompensated: "compensated or none"}[kind]}
						if len(v.Violations) != 1 || v.Violations[0] != want {
							t.Fatalf("violations %+v, want %+v", v.Violations, want)
						}
						for _, s := range []string{`"charge"`, `"p-charge"`, "expected " + want.Expected, "found " + state} {
							if !strings.Contains(v.Message, s) {
								t.Fatalf("message %q does not name %s", v.Message, s)
							}
						}
					}
					var dirs []sagav1.Direction
					for _, c := range v.Redrive {
						dirs = append(dirs, c.Direction)
					}
					if redrive == "" && len(dirs) != 0 || redrive != "" && !reflect.DeepEqual(dirs, []sagav1.Direction{redrive}) {
						t.Fatalf("redrive %v, want %q", dirs, redrive)
					}
					if (status == metav1.ConditionUnknown) != (len(v.Unanswered) == 1) {
						t.Fatalf("unanswered %v with status %s", v.Unanswered, status)
					}
					again := CheckConsistency(spec, st, in)
					if !reflect.DeepEqual(v, again) {
						t.Fatalf("not deterministic:\n%+v\n%+v", v, again)
					}
				})
			}
		}
	}
}

func TestCheckConsistencyNotEnded(t *testing.T) {
	spec := newSpec(comp("a"))
	for _, p := range []sagav1.SagaPhase{"", sagav1.SagaPending, sagav1.SagaRunning, sagav1.SagaCompensating} {
		v := CheckConsistency(spec, &sagav1.OrderSagaStatus{Phase: p}, map[string]StepAnswer{"a": {State: StateNone}})
		if v.Status != metav1.ConditionUnknown || v.Reason != sagav1.ReasonCheckPending || len(v.Violations) != 0 {
			t.Fatalf("%q: %+v", p, v)
		}
	}
}

func TestCheckConsistencyManySteps(t *testing.T) {
	spec := newSpec(comp("create-order"), comp("process-payment"), comp("reserve-inventory"), comp("send-confirmation"))
	spec.Steps[3].Participant = "p-process-payment" // two steps on one participant

	t.Run("succeeded: every step applied", func(t *testing.T) {
		st := endedStatus(spec, sagav1.SagaSucceeded, sagav1.StepSucceeded, sagav1.StepSucceeded, sagav1.StepSucceeded, sagav1.StepSucceeded)
		all := map[string]StepAnswer{"create-order": {State: StateApplied}, "process-payment": {State: StateApplied},
			"reserve-inventory": {State: StateApplied}, "send-confirmation": {State: StateApplied}}
		v := CheckConsistency(spec, st, all)
		if v.Status != metav1.ConditionTrue || v.Message != "every participant agrees with the outcome Succeeded (4 of 4 steps checked)" {
			t.Fatalf("%+v", v)
		}
	})

	t.Run("violations in spec order, redrive forward in spec order with the outputs of the steps before", func(t *testing.T) {
		st := endedStatus(spec, sagav1.SagaSucceeded, sagav1.StepSucceeded, sagav1.StepSucceeded, sagav1.StepSucceeded, sagav1.StepSucceeded)
		st.Steps[2].Attempts = 3
		v := CheckConsistency(spec, st, map[string]StepAnswer{
			"create-order": {State: StateApplied}, "process-payment": {State: StateNone},
			"reserve-inventory": {State: StateCompensated}, "send-confirmation": {State: StateApplied}})
		if v.Status != metav1.ConditionFalse || v.Reason != sagav1.ReasonStepNotApplied {
			t.Fatalf("%+v", v)
		}
		want := `2 step(s) disagree with the outcome Succeeded: ` +
			`step "process-payment" at participant "p-process-payment": expected applied, found none; ` +
			`step "reserve-inventory" at participant "p-reserve-inventory": expected applied, found compensated`
		if v.Message != want {
			t.Fatalf("message\n%s\nwant\n%s", v.Message, want)
		}
		if len(v.Redrive) != 2 || v.Redrive[0].Step != "process-payment" || v.Redrive[1].Step != "reserve-inventory" {
			t.Fatalf("redrive %+v", v.Redrive)
		}
		c := v.Redrive[1]
		if c.Action != "do-reserve-inventory" || c.Direction != sagav1.Forward || c.Attempt != 4 || c.Participant != "p-reserve-inventory" {
			t.Fatalf("call %+v", c)
		}
		wantOut := map[string]map[string]string{"create-order": {"ref": "create-order-out"}, "process-payment": {"ref": "process-payment-out"}}
		if !reflect.DeepEqual(c.Outputs, wantOut) {
			t.Fatalf("outputs %v", c.Outputs)
		}
		if v.Redrive[0].Outputs["create-order"]["ref"] != "create-order-out" || len(v.Redrive[0].Outputs) != 1 {
			t.Fatalf("outputs %v", v.Redrive[0].Outputs)
		}
	})

	t.Run("compensated: compensations re-driven in reverse with every output, never a skipped or rejected step", func(t *testing.T) {
		st := endedStatus(spec, sagav1.SagaCompensated, sagav1.StepCompensated, sagav1.StepCompensated, sagav1.StepFailed, sagav1.StepSkipped)
		v := CheckConsistency(spec, st, map[string]StepAnswer{
			"create-order": {State: StateApplied}, "process-payment": {State: StateApplied},
			"reserve-inventory": {State: StateApplied}, "send-confirmation": {State: StateApplied}})
		if v.Reason != sagav1.ReasonStepNotCompensated || len(v.Violations) != 4 {
			t.Fatalf("%+v", v)
		}
		if len(v.Redrive) != 2 || v.Redrive[0].Step != "process-payment" || v.Redrive[1].Step != "create-order" {
			t.Fatalf("redrive %+v", v.Redrive)
		}
		c := v.Redrive[0]
		if c.Direction != sagav1.Compensate || c.Action != "undo-process-payment" || c.Attempt != 3 || len(c.Outputs) != 2 {
			t.Fatalf("call %+v", c)
		}
	})

	t.Run("failed: only settled steps get a verdict", func(t *testing.T) {
		// The saga compensated send-confirmation and reserve-inventory, then
		// the refund of process-payment was refused.
		st := endedStatus(spec, sagav1.SagaFailed, sagav1.StepSucceeded, sagav1.StepCompensationFailed, sagav1.StepCompensated, sagav1.StepCompensated)
		v := CheckConsistency(spec, st, map[string]StepAnswer{
			"create-order": {State: StateApplied}, "process-payment": {State: "anything"},
			"reserve-inventory": {State: StateNone}, "send-confirmation": {State: StateCompensated}})
		if v.Status != metav1.ConditionTrue || !strings.Contains(v.Message, "3 of 4 steps checked") {
			t.Fatalf("%+v", v)
		}
		v = CheckConsistency(spec, st, map[string]StepAnswer{
			"create-order": {State: StateNone}, "process-payment": {State: StateApplied},
			"reserve-inventory": {State: StateApplied}, "send-confirmation": {State: StateCompensated}})
		if v.Status != metav1.ConditionFalse || v.Reason != sagav1.ReasonStepNotApplied || len(v.Violations) != 2 ||
			v.Violations[1].Kind != sagav1.ReasonStepNotCompensated {
			t.Fatalf("%+v", v)
		}
		if len(v.Redrive) != 2 || v.Redrive[0].Direction != sagav1.Forward || v.Redrive[1].Direction != sagav1.Compensate {
			t.Fatalf("redrive %+v", v.Redrive)
		}
	})

	t.Run("violations win over unknown; unreachable wins over not supported", func(t *testing.T) {
		st := endedStatus(spec, sagav1.SagaSucceeded, sagav1.StepSucceeded, sagav1.StepSucceeded, sagav1.StepSucceeded, sagav1.StepSucceeded)
		in := map[string]StepAnswer{
			"create-order": {Err: AnswerNotSupported}, "process-payment": {Err: AnswerUnreachable},
			"reserve-inventory": {State: StateNone}, "send-confirmation": {Err: AnswerUnreachable}}
		v := CheckConsistency(spec, st, in)
		if v.Status != metav1.ConditionFalse || v.Reason != sagav1.ReasonStepNotApplied {
			t.Fatalf("%+v", v)
		}
		if !reflect.DeepEqual(v.Unanswered, []string{"create-order", "process-payment", "send-confirmation"}) {
			t.Fatalf("unanswered %v", v.Unanswered)
		}
		in["reserve-inventory"] = StepAnswer{State: StateApplied}
		v = CheckConsistency(spec, st, in)
		if v.Status != metav1.ConditionUnknown || v.Reason != sagav1.ReasonParticipantUnreachable {
			t.Fatalf("%+v", v)
		}
		want := `no verdict for 3 step(s): participant "p-process-payment" could not be asked (step "process-payment", "send-confirmation"); ` +
			`participant "p-create-order" does not implement the state query (step "create-order"); ` +
			`the 1 other step(s) checked agree with the outcome Succeeded`
		if v.Message != want {
			t.Fatalf("message\n%s\nwant\n%s", v.Message, want)
		}
		in["process-payment"] = StepAnswer{State: StateApplied}
		in["send-confirmation"] = StepAnswer{State: StateApplied}
		v = CheckConsistency(spec, st, in)
		if v.Status != metav1.ConditionUnknown || v.Reason != sagav1.ReasonQueryNotSupported {
			t.Fatalf("%+v", v)
		}
	})
}

func TestCheckConsistencyMessageBounded(t *testing.T) {
	var steps []sagav1.Step
	var phases []sagav1.StepPhase
	in := map[string]StepAnswer{}
	for i := range 32 {
		s := comp(fmt.Sprintf("%s-%02d", strings.Repeat("s", 60), i))
		s.Participant = strings.Repeat("p", 63)
		steps = append(steps, s)
		phases = append(phases, sagav1.StepSucceeded)
		in[s.Name] = StepAnswer{State: strings.Repeat("<", 500)}
	}
	spec := newSpec(steps...)
	v := CheckConsistency(spec, endedStatus(spec, sagav1.SagaSucceeded, phases...), in)
	if len(v.Violations) != 32 || v.Violations[0].Actual == in[steps[0].Name].State {
		t.Fatalf("violations %d, actual %q", len(v.Violations), v.Violations[0].Actual)
	}
	if n := len(v.Message); n > MaxConsistencyMessageBytes || !strings.HasSuffix(v.Message, "…") {
		t.Fatalf("message of %d bytes: %q", n, v.Message)
	}
}

func TestAfterRedrive(t *testing.T) {
	spec := newSpec(comp("a"), comp("b"), comp("c"))
	st := endedStatus(spec, sagav1.SagaSucceeded, sagav1.StepSucceeded, sagav1.StepSucceeded, sagav1.StepSucceeded)
	before := CheckConsistency(spec, st, map[string]StepAnswer{"a": {State: StateNone}, "b": {State: StateNone}, "c": {State: StateApplied}})

	t.Run("repaired", func(t *testing.T) {
		after := CheckConsistency(spec, st, map[string]StepAnswer{"a": {State: StateApplied}, "b": {State: StateApplied}, "c": {State: StateApplied}})
		v := AfterRedrive(before, after)
		if v.Status != metav1.ConditionTrue || v.Reason != sagav1.ReasonConsistent || len(v.Repaired) != 2 {
			t.Fatalf("%+v", v)
		}
		if !strings.HasPrefix(v.Message, `repaired by re-sending forward "a", forward "b" with the original idempotency key(s); every participant agrees`) {
			t.Fatalf("message %q", v.Message)
		}
	})
	t.Run("one still disagrees", func(t *testing.T) {
		after := CheckConsistency(spec, st, map[string]StepAnswer{"a": {State: StateApplied}, "b": {State: StateNone}, "c": {State: StateApplied}})
		v := AfterRedrive(before, after)
		if v.Status != metav1.ConditionFalse || v.Reason != sagav1.ReasonRepairFailed {
			t.Fatalf("%+v", v)
		}
		if len(v.Repaired) != 1 || v.Repaired[0].Step != "a" || len(v.Violations) != 1 || v.Violations[0].Step != "b" {
			t.Fatalf("%+v", v)
		}
		if !strings.Contains(v.Message, "a person must act") || !strings.Contains(v.Message, `step "b"`) {
			t.Fatalf("message %q", v.Message)
		}
	})
	t.Run("unreachable after the redrive", func(t *testing.T) {
		after := CheckConsistency(spec, st, map[string]StepAnswer{"a": {Err: AnswerUnreachable}, "b": {State: StateApplied}, "c": {State: StateApplied}})
		v := AfterRedrive(before, after)
		if v.Status != metav1.ConditionUnknown || v.Reason != sagav1.ReasonParticipantUnreachable {
			t.Fatalf("%+v", v)
		}
		if len(v.Repaired) != 1 || v.Repaired[0].Step != "b" {
			t.Fatalf("repaired %+v", v.Repaired)
		}
	})
}

func TestRecordCheck(t *testing.T) {
	spec := newSpec(comp("a"), comp("b"), comp("c"))
	st := endedStatus(spec, sagav1.SagaSucceeded, sagav1.StepSucceeded, sagav1.StepSucceeded, sagav1.StepSucceeded)
	now := t0
	answer := func(a, b, c StepAnswer) Verdict {
		return CheckConsistency(spec, st, map[string]StepAnswer{"a": a, "b": b, "c": c})
	}
	ok := StepAnswer{State: StateApplied}
	gone := StepAnswer{State: StateNone}
	down := StepAnswer{Err: AnswerUnreachable}
	record := func(v Verdict) []Transition {
		now = now.Add(time.Minute)
		return RecordCheck(st, 2, now, v)
	}
	expect := func(ts []Transition, want ...string) {
		t.Helper()
		var got []string
		for _, tr := range ts {
			kind := "Normal"
			if tr.Warning {
				kind = "Warning"
			}
			got = append(got, kind+" "+tr.Reason+" "+tr.Step)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("transitions %q, want %q", got, want)
		}
	}
	expectList := func(want ...string) {
		t.Helper()
		if strings.Join(st.ConsistencyViolations, ",") != strings.Join(want, ",") {
			t.Fatalf("consistencyViolations %v, want %v", st.ConsistencyViolations, want)
		}
	}

	expect(record(answer(ok, ok, ok)))
	c := cond(st, sagav1.ConsistentCondition)
	if c.Status != metav1.ConditionTrue || c.ObservedGeneration != 2 || !c.LastTransitionTime.Time.Equal(now) || !st.LastConsistencyCheck.Time.Equal(now) {
		t.Fatalf("condition %+v, last check %v", c, st.LastConsistencyCheck)
	}
	firstTrue := now
	expect(record(answer(ok, ok, ok)))
	if !cond(st, sagav1.ConsistentCondition).LastTransitionTime.Time.Equal(firstTrue) || !st.LastConsistencyCheck.Time.Equal(now) {
		t.Fatal("a check that changes nothing moved lastTransitionTime, or did not move lastConsistencyCheck")
	}

	// b and c tampered: one Warning each, once.
	ts := record(answer(ok, gone, gone))
	expect(ts, "Warning StepNotApplied b", "Warning StepNotApplied c")
	if !strings.Contains(ts[0].Message, `step "b" at participant "p-b": expected applied, found none`) {
		t.Fatalf("message %q", ts[0].Message)
	}
	expectList("b", "c")
	expect(record(answer(ok, gone, gone)))
	expect(record(answer(ok, gone, gone)))

	// b's participant goes down: b stays listed, the condition is Unknown, no Event.
	expect(record(answer(ok, down, gone)))
	expectList("b", "c")
	if c := cond(st, sagav1.ConsistentCondition); c.Status != metav1.ConditionFalse {
		t.Fatalf("condition %+v: c still disagrees", c)
	}
	expect(record(answer(ok, down, ok)))
	expectList("b")
	if c := cond(st, sagav1.ConsistentCondition); c.Status != metav1.ConditionUnknown || c.Reason != sagav1.ReasonParticipantUnreachable {
		t.Fatalf("condition %+v", c)
	}
	// It comes back still wrong: nothing new.
	expect(record(answer(ok, gone, ok)))
	expectList("b")
	// a goes wrong too, then everything agrees again.
	expect(record(answer(gone, gone, ok)), "Warning StepNotApplied a")
	expectList("a", "b")
	expect(record(answer(ok, ok, ok)), "Normal Consistent ")
	expectList()

	// A redrive that repairs a: a Warning for the violation found, a Normal Repaired.
	before := answer(gone, ok, ok)
	ts = record(AfterRedrive(before, answer(ok, ok, ok)))
	expect(ts, "Warning StepNotApplied a", "Normal Repaired ")
	if want := `repaired by re-sending the call with its original idempotency key: step "a" at participant "p-a" is applied again (it was none)`; ts[1].Message != want {
		t.Fatalf("message %q, want %q", ts[1].Message, want)
	}
	expectList()
	if c := cond(st, sagav1.ConsistentCondition); c.Status != metav1.ConditionTrue || !strings.HasPrefix(c.Message, "repaired by re-sending") {
		t.Fatalf("condition %+v", c)
	}
	// A redrive that does not help: RepairFailed, once.
	before = answer(gone, ok, ok)
	ts = record(AfterRedrive(before, answer(gone, ok, ok)))
	expect(ts, "Warning RepairFailed a")
	if want := `step "a" at participant "p-a": expected applied, still none after its call was re-sent with the original idempotency key: a person must act`; ts[0].Message != want {
		t.Fatalf("message %q, want %q", ts[0].Message, want)
	}
	if c := cond(st, sagav1.ConsistentCondition); c.Status != metav1.ConditionFalse || c.Reason != sagav1.ReasonRepairFailed {
		t.Fatalf("condition %+v", c)
	}
	expect(record(AfterRedrive(before, answer(gone, ok, ok))))
	// Repaired at a later check.
	expect(record(AfterRedrive(before, answer(ok, ok, ok))), "Normal Repaired ")
	expectList()

	// A violation reported without repair, then repair asked for and failing:
	// the first failed repair is a transition worth a Warning.
	expect(record(answer(ok, ok, gone)), "Warning StepNotApplied c")
	before = answer(ok, ok, gone)
	if got := NewViolations(st, before); len(got) != 0 {
		t.Fatalf("new violations %+v", got)
	}
	expect(record(AfterRedrive(before, answer(ok, ok, gone))), "Warning RepairFailed c")
	expect(record(AfterRedrive(before, answer(ok, ok, gone))))
	if got := NewViolations(st, answer(gone, ok, gone)); len(got) != 1 || got[0].Step != "a" {
		t.Fatalf("new violations %+v", got)
	}
}

func TestRecordCheckKeepsStatusBounded(t *testing.T) {
	var steps []sagav1.Step
	var phases []sagav1.StepPhase
	in := map[string]StepAnswer{}
	for i := range 32 {
		s := comp(fmt.Sprintf("%s-%02d", strings.Repeat(string(rune('a'+i%26)), 60), i))
		s.Participant = strings.Repeat("p", 63)
		steps = append(steps, s)
		phases = append(phases, sagav1.StepSucceeded)
		in[s.Name] = StepAnswer{State: strings.Repeat("<", 100)}
	}
	spec := newSpec(steps...)
	st := endedStatus(spec, sagav1.SagaSucceeded, phases...)
	for i := range st.Steps {
		// The outputs budget, full (a Succeeded step keeps no lastError).
		st.Steps[i].Outputs = map[string]string{"k": strings.Repeat("x", 120)}
	}
	for range MaxHistory {
		st.History = append(st.History, sagav1.HistoryEntry{Time: metav1.NewTime(t0), Step: steps[0].Name, Outcome: "Retrying", Message: strings.Repeat("h", 256)})
	}
	RecordCheck(st, 1, t0, CheckConsistency(spec, st, in))
	if len(st.ConsistencyViolations) != 32 {
		t.Fatalf("listed %d", len(st.ConsistencyViolations))
	}
	if n := StatusSize(st); n > MaxStatusBytes {
		t.Fatalf("status of %d bytes", n)
	}
}
