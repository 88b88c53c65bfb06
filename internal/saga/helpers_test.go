package saga

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// comp builds a step with a compensation; pivot one without.
func comp(name string) sagav1.Step {
	return sagav1.Step{Name: name, Participant: "p-" + name, Action: "do-" + name, Compensation: "undo-" + name}
}

func pivot(name string) sagav1.Step {
	return sagav1.Step{Name: name, Participant: "p-" + name, Action: "do-" + name}
}

func newSpec(steps ...sagav1.Step) *sagav1.OrderSagaSpec {
	return &sagav1.OrderSagaSpec{
		Order: sagav1.Order{OrderID: "1001", UserID: "u-42", Currency: "USD",
			Items: []sagav1.OrderItem{{SKU: "SKU-1", Quantity: 2, UnitPriceCents: 1999}}},
		Steps: steps,
	}
}

func allPolicies(spec *sagav1.OrderSagaSpec, p StepPolicies) map[string]StepPolicies {
	m := map[string]StepPolicies{}
	for _, s := range spec.Steps {
		m[s.Name] = p
	}
	return m
}

// harness drives Decide like the controller would, checking on every
// decision that the input is untouched, that deciding again on the output
// (no result) changes nothing, and that the status stays bounded.
type harness struct {
	t           *testing.T
	spec        *sagav1.OrderSagaSpec
	st          *sagav1.OrderSagaStatus
	now         time.Time
	gen         int64
	pol         map[string]StepPolicies
	deleting    bool
	retry       string
	jitter      func() float64
	last        Decision
	trans       []Transition
	callsSeen   []Call
	skipRecheck bool
	unavailable map[string]Blocker
}

func newHarness(t *testing.T, spec *sagav1.OrderSagaSpec) *harness {
	t.Helper()
	return &harness{t: t, spec: spec, now: t0, gen: 1, pol: allPolicies(spec, DefaultPolicies())}
}

func (h *harness) input(r *Result) Input {
	return Input{
		Spec:           h.spec,
		Status:         h.st,
		Generation:     h.gen,
		Now:            h.now,
		Policies:       h.pol,
		Deleting:       h.deleting,
		Unavailable:    h.unavailable,
		RetryRequested: h.retry,
		Result:         r,
		Jitter:         h.jitter,
	}
}

func (h *harness) decide(r *Result) Decision {
	h.t.Helper()
	in := h.input(r)
	var before *sagav1.OrderSagaStatus
	if h.st != nil {
		before = h.st.DeepCopy()
	}
	d := Decide(in)
	if before != nil && !reflect.DeepEqual(before, h.st) {
		h.t.Fatalf("Decide modified its input status")
	}
	checkDecision(h.t, in, d)
	h.st = d.Status
	h.last = d
	h.trans = append(h.trans, d.Transitions...)
	if d.Action.Call != nil && d.Action.Kind == ActionCall {
		h.callsSeen = append(h.callsSeen, *d.Action.Call)
	}
	return d
}

// checkDecision checks the properties every decision must have.
func checkDecision(t interface {
	Helper()
	Fatalf(string, ...any)
}, in Input, d Decision) {
	t.Helper()
	again := in
	again.Status = d.Status
	again.Result = nil
	again.Jitter = func() float64 { t.Fatalf("idempotent re-decision drew jitter"); return 0 }
	d2 := Decide(again)
	if !apiequality.Semantic.DeepEqual(d.Status, d2.Status) {
		a, _ := json.MarshalIndent(d.Status, "", " ")
		b, _ := json.MarshalIndent(d2.Status, "", " ")
		t.Fatalf("Decide is not idempotent:\nfirst:\n%s\nagain:\n%s", a, b)
	}
	if len(d2.Transitions) != 0 {
		t.Fatalf("idempotent re-decision emitted transitions: %+v", d2.Transitions)
	}
	if !reflect.DeepEqual(d.Action, d2.Action) {
		t.Fatalf("idempotent re-decision changed the action: %+v then %+v", d.Action, d2.Action)
	}
	if n := StatusSize(d.Status); n >= 16<<10 {
		t.Fatalf("status is %d bytes", n)
	}
	if len(d.Status.History) > MaxHistory {
		t.Fatalf("history has %d entries", len(d.Status.History))
	}
	for _, e := range d.Status.History {
		if len(e.Message) > MaxHistoryMessageBytes {
			t.Fatalf("history message of %d bytes", len(e.Message))
		}
	}
	if (d.Action.Kind == ActionCall || d.Action.Kind == ActionBlocked) != (d.Action.Call != nil) {
		t.Fatalf("action %s with call %v", d.Action.Kind, d.Action.Call)
	}
}

func (h *harness) expectCall(step string, dir sagav1.Direction, attempt int32) *Call {
	h.t.Helper()
	a := h.last.Action
	if a.Kind != ActionCall || a.Call == nil {
		h.t.Fatalf("want Call %s %s #%d, got %s %+v (phase %s)", step, dir, attempt, a.Kind, a.Call, h.st.Phase)
	}
	c := a.Call
	if c.Step != step || c.Direction != dir || c.Attempt != attempt {
		h.t.Fatalf("want Call %s %s #%d, got %s %s #%d", step, dir, attempt, c.Step, c.Direction, c.Attempt)
	}
	idx := -1
	for i, s := range h.spec.Steps {
		if s.Name == step {
			idx = i
		}
	}
	want := h.spec.Steps[idx].Action
	if dir == sagav1.Compensate {
		want = h.spec.Steps[idx].Compensation
	}
	if c.Action != want || c.Participant != h.spec.Steps[idx].Participant {
		h.t.Fatalf("call %s: action %q participant %q", step, c.Action, c.Participant)
	}
	if h.st.CurrentStep != step || h.st.Attempts != attempt {
		h.t.Fatalf("currentStep/attempts = %s/%d, want %s/%d", h.st.CurrentStep, h.st.Attempts, step, attempt)
	}
	return c
}

func (h *harness) expectKind(k ActionKind) {
	h.t.Helper()
	if h.last.Action.Kind != k {
		h.t.Fatalf("want %s, got %s %+v (phase %s)", k, h.last.Action.Kind, h.last.Action.Call, h.st.Phase)
	}
}

func (h *harness) expectPhase(p sagav1.SagaPhase) {
	h.t.Helper()
	if h.st.Phase != p {
		h.t.Fatalf("saga phase %s, want %s", h.st.Phase, p)
	}
}

func (h *harness) step(name string) sagav1.StepStatus {
	h.t.Helper()
	for _, s := range h.st.Steps {
		if s.Name == name {
			return s
		}
	}
	h.t.Fatalf("no step %s", name)
	return sagav1.StepStatus{}
}

func (h *harness) expectStep(name string, p sagav1.StepPhase) sagav1.StepStatus {
	h.t.Helper()
	s := h.step(name)
	if s.Phase != p {
		h.t.Fatalf("step %s is %s, want %s", name, s.Phase, p)
	}
	return s
}

// answer feeds the result of the call last decided.
func (h *harness) answer(o Outcome, mods ...func(*Result)) Decision {
	h.t.Helper()
	c := h.last.Action.Call
	if h.last.Action.Kind != ActionCall || c == nil {
		h.t.Fatalf("no call to answer (%s)", h.last.Action.Kind)
	}
	r := &Result{Step: c.Step, Direction: c.Direction, Outcome: o}
	switch o {
	case OutcomeRejected:
		r.Error = &sagav1.StepError{Code: "insufficient_funds", Message: "card declined", HTTPStatus: 409}
	case OutcomeTransient:
		r.Error = &sagav1.StepError{Code: "HTTP503", Message: "unavailable", HTTPStatus: 503}
	case OutcomeOK:
		if c.Direction == sagav1.Forward {
			r.Outputs = map[string]string{"ref": c.Step + "-1"}
		}
	}
	for _, m := range mods {
		m(r)
	}
	return h.decide(r)
}

func (h *harness) advance(d time.Duration) { h.now = h.now.Add(d) }

// waitOut advances the clock to the end of the current Wait and decides.
func (h *harness) waitOut() Decision {
	h.t.Helper()
	h.expectKind(ActionWait)
	h.now = h.last.Action.Until
	return h.decide(nil)
}

func cond(st *sagav1.OrderSagaStatus, typ string) *metav1.Condition {
	return meta.FindStatusCondition(st.Conditions, typ)
}

func (h *harness) expectCondition(typ string, status metav1.ConditionStatus, reason string) {
	h.t.Helper()
	c := cond(h.st, typ)
	if status == "" {
		if c != nil {
			h.t.Fatalf("condition %s present: %+v", typ, *c)
		}
		return
	}
	if c == nil {
		h.t.Fatalf("condition %s missing", typ)
	}
	if c.Status != status || c.Reason != reason {
		h.t.Fatalf("condition %s = %s/%s (%s), want %s/%s", typ, c.Status, c.Reason, c.Message, status, reason)
	}
	if c.ObservedGeneration != h.gen {
		h.t.Fatalf("condition %s observedGeneration %d, want %d", typ, c.ObservedGeneration, h.gen)
	}
}

// transitionsString renders transitions for failure messages.
func transitionsString(ts []Transition) string {
	var b strings.Builder
	for _, t := range ts {
		fmt.Fprintf(&b, "  [%s warning=%v %s] %s\n", t.Step, t.Warning, t.Reason, t.Message)
	}
	return b.String()
}

func (h *harness) expectTransition(step, reason string, warning bool) Transition {
	h.t.Helper()
	for _, t := range h.trans {
		if t.Step == step && t.Reason == reason && t.Warning == warning {
			return t
		}
	}
	h.t.Fatalf("no transition step=%q reason=%s warning=%v in:\n%s", step, reason, warning, transitionsString(h.trans))
	return Transition{}
}

// compensateOrder lists the steps of the compensating calls, first call of each.
func (h *harness) compensateOrder() []string {
	var out []string
	seen := map[string]bool{}
	for _, c := range h.callsSeen {
		if c.Direction == sagav1.Compensate && !seen[c.Step] {
			seen[c.Step] = true
			out = append(out, c.Step)
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
