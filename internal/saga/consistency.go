package saga

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// States a participant reports for a step (PROTOCOL.md, "Consistency query").
const (
	StateApplied     = "applied"
	StateCompensated = "compensated"
	StateNone        = "none"
)

// Bounds of what a check writes.
const (
	// MaxConsistencyMessageBytes bounds the Consistent condition's message.
	MaxConsistencyMessageBytes = 1024
	// maxStateBytes bounds a participant's state as quoted in messages.
	maxStateBytes = 32
)

// AnswerError says why a step has no state to compare.
type AnswerError string

const (
	// AnswerUnreachable: the participant could not be asked, or gave no
	// usable answer (connection error, timeout, a status other than 200 or
	// 404, an unreadable body, a missing Participant or token).
	AnswerUnreachable AnswerError = "Unreachable"
	// AnswerNotSupported: the participant answered 404: it does not
	// implement the state query, so its steps get no verdict.
	AnswerNotSupported AnswerError = "NotSupported"
)

// StepAnswer is what a participant said about one step of a saga.
type StepAnswer struct {
	// State is the step's state as the participant sent it (applied,
	// compensated, none or anything else); "" when the participant left the
	// step out, which reads as none.
	State string
	// Err is set when there is no state: the participant could not be
	// asked or does not implement the query. State is ignored then.
	Err AnswerError
}

// Violation is one step on which a participant disagrees with the saga.
type Violation struct {
	Step        string
	Participant string
	// Kind is sagav1.ReasonStepNotApplied or sagav1.ReasonStepNotCompensated.
	Kind string
	// Expected is what the saga's log requires: "applied", or
	// "compensated or none".
	Expected string
	// Actual is the state the participant reported (bounded).
	Actual string
}

// String describes the violation for messages and Events: the step, the
// participant, the expected and the actual state.
func (v Violation) String() string {
	return fmt.Sprintf("step %q at participant %q: expected %s, found %s", v.Step, v.Participant, v.Expected, v.Actual)
}

// Verdict is the result of comparing a saga's log with its participants.
type Verdict struct {
	// Status, Reason and Message are the Consistent condition's: True
	// (Consistent), False (StepNotApplied, StepNotCompensated, or
	// RepairFailed after AfterRedrive) or Unknown (ParticipantUnreachable,
	// QueryNotSupported, or CheckPending for a saga that has not ended).
	// Violations win over Unknown; an unreachable participant wins over
	// one that does not implement the query (it is worth asking again).
	Status  metav1.ConditionStatus
	Reason  string
	Message string
	// Violations in spec order.
	Violations []Violation
	// Unanswered names, in spec order, the steps that got no verdict because
	// their participant gave no state.
	Unanswered []string
	// Redrive lists the calls to re-send, with their original idempotency
	// keys, to repair the violations: the forward call of a Succeeded step
	// that is not applied, the compensating call of a Compensated step that
	// is not compensated. Forward calls come in spec order, compensating
	// calls in reverse, as the saga made them; each carries the outputs the
	// original call carried. A step whose call the saga never completed
	// (Skipped, Failed, Unknown) is never re-driven. After AfterRedrive, the
	// calls that were re-sent.
	Redrive []Call
	// Repaired lists the violations a redrive made go away (AfterRedrive).
	Repaired []Violation
}

// maxEventBytes bounds the message of a transition RecordCheck returns.
const maxEventBytes = 512

// CheckConsistency compares the saga's log (spec and status) with what its
// participants report for each step (answers, by step name; a step missing
// from answers counts as unreachable). What each outcome requires:
//
//   - Succeeded: every step applied (else StepNotApplied).
//   - Compensated: every step compensated or none (else StepNotCompensated),
//     whatever its phase: a Skipped or rejected step must have left nothing
//     in place either.
//   - Failed (the dead letter, waiting for a person): only the steps whose
//     recorded phase is settled are checked. A Compensated step must be
//     compensated or none; a Succeeded step, which the saga has not tried to
//     compensate, must be applied. The stalled step and every other phase
//     (Failed, Unknown, CompensationFailed, Skipped) get no verdict.
//
// A saga that has not ended gets Unknown/CheckPending. The result is
// deterministic: violations and groups in the message follow spec order.
func CheckConsistency(spec *sagav1.OrderSagaSpec, status *sagav1.OrderSagaStatus, answers map[string]StepAnswer) Verdict {
	if spec == nil || status == nil || !status.Phase.Terminal() {
		return Verdict{Status: metav1.ConditionUnknown, Reason: sagav1.ReasonCheckPending, Message: "the saga has not ended"}
	}
	phases := make(map[string]sagav1.StepPhase, len(status.Steps))
	recorded := make(map[string]sagav1.StepStatus, len(status.Steps))
	for _, s := range status.Steps {
		phases[s.Name] = s.Phase
		recorded[s.Name] = s
	}
	var (
		v           Verdict
		checked     int
		unreachable = &answerGroups{}
		unsupported = &answerGroups{}
		forward     []Call
		compensate  []Call
	)
	for i, step := range spec.Steps {
		ph := phases[step.Name]
		kind, expected := expectation(status.Phase, ph)
		if kind == "" {
			continue // no verdict for this step
		}
		a, ok := answers[step.Name]
		if !ok {
			a = StepAnswer{Err: AnswerUnreachable}
		}
		switch a.Err {
		case AnswerUnreachable:
			unreachable.add(step.Participant, step.Name)
			v.Unanswered = append(v.Unanswered, step.Name)
			continue
		case AnswerNotSupported:
			unsupported.add(step.Participant, step.Name)
			v.Unanswered = append(v.Unanswered, step.Name)
			continue
		}
		checked++
		state := a.State
		if state == "" {
			state = StateNone
		}
		if agrees(kind, state) {
			continue
		}
		v.Violations = append(v.Violations, Violation{
			Step: step.Name, Participant: step.Participant, Kind: kind, Expected: expected,
			Actual: Truncate(state, maxStateBytes),
		})
		switch {
		case kind == sagav1.ReasonStepNotApplied && ph == sagav1.StepSucceeded:
			forward = append(forward, redriveCall(spec, status, i, sagav1.Forward, recorded[step.Name].Attempts+1))
		case kind == sagav1.ReasonStepNotCompensated && ph == sagav1.StepCompensated && step.Compensation != "":
			compensate = append(compensate, redriveCall(spec, status, i, sagav1.Compensate, recorded[step.Name].CompensationAttempts+1))
		}
	}
	slices.Reverse(compensate)
	v.Redrive = append(forward, compensate...)

	switch {
	case len(v.Violations) > 0:
		v.Status = metav1.ConditionFalse
		v.Reason = v.Violations[0].Kind
		v.Message = fmt.Sprintf("%d step(s) disagree with the outcome %s: %s", len(v.Violations), status.Phase, joinViolations(v.Violations))
		if len(v.Unanswered) > 0 {
			v.Message += "; no verdict: " + unknownText(unreachable, unsupported)
		}
	case len(v.Unanswered) > 0:
		v.Status = metav1.ConditionUnknown
		v.Reason = sagav1.ReasonQueryNotSupported
		if len(unreachable.order) > 0 {
			v.Reason = sagav1.ReasonParticipantUnreachable
		}
		v.Message = fmt.Sprintf("no verdict for %d step(s): %s", len(v.Unanswered), unknownText(unreachable, unsupported))
		if checked > 0 {
			v.Message += fmt.Sprintf("; the %d other step(s) checked agree with the outcome %s", checked, status.Phase)
		}
	default:
		v.Status = metav1.ConditionTrue
		v.Reason = sagav1.ReasonConsistent
		v.Message = fmt.Sprintf("every participant agrees with the outcome %s (%d of %d steps checked)", status.Phase, checked, len(spec.Steps))
	}
	v.Message = Truncate(v.Message, MaxConsistencyMessageBytes)
	return v
}

// expectation is what a step of a saga in phase sp whose step is in phase
// ph must look like at its participant: the kind of violation it would be,
// and the expected state; "" when the step gets no verdict.
func expectation(sp sagav1.SagaPhase, ph sagav1.StepPhase) (kind, expected string) {
	const (
		applied = StateApplied
		undone  = StateCompensated + " or " + StateNone
	)
	switch sp {
	case sagav1.SagaSucceeded:
		return sagav1.ReasonStepNotApplied, applied
	case sagav1.SagaCompensated:
		return sagav1.ReasonStepNotCompensated, undone
	case sagav1.SagaFailed:
		switch ph {
		case sagav1.StepSucceeded:
			return sagav1.ReasonStepNotApplied, applied
		case sagav1.StepCompensated:
			return sagav1.ReasonStepNotCompensated, undone
		}
	}
	return "", ""
}

func agrees(kind, state string) bool {
	if kind == sagav1.ReasonStepNotApplied {
		return state == StateApplied
	}
	return state == StateCompensated || state == StateNone
}

// redriveCall is the call of step i in direction dir as the saga made it:
// a forward call carries the outputs of the steps before it, a compensating
// call the outputs of every step (the same as Decide's calls).
func redriveCall(spec *sagav1.OrderSagaSpec, status *sagav1.OrderSagaStatus, i int, dir sagav1.Direction, attempt int32) Call {
	s := spec.Steps[i]
	c := Call{Step: s.Name, Participant: s.Participant, Action: s.Action, Direction: dir, Attempt: attempt}
	if dir == sagav1.Compensate {
		c.Action = s.Compensation
	}
	before := make(map[string]bool, i)
	for _, p := range spec.Steps[:i] {
		before[p.Name] = true
	}
	for _, ss := range status.Steps {
		if len(ss.Outputs) == 0 || (dir == sagav1.Forward && !before[ss.Name]) {
			continue
		}
		if c.Outputs == nil {
			c.Outputs = map[string]map[string]string{}
		}
		c.Outputs[ss.Name] = maps.Clone(ss.Outputs)
	}
	return c
}

// answerGroups groups steps by participant, in order of first appearance.
type answerGroups struct {
	order []string
	steps map[string][]string
}

func (g *answerGroups) add(participant, step string) {
	if g.steps == nil {
		g.steps = map[string][]string{}
	}
	if _, ok := g.steps[participant]; !ok {
		g.order = append(g.order, participant)
	}
	g.steps[participant] = append(g.steps[participant], step)
}

func (g *answerGroups) describe(what string) []string {
	out := make([]string, 0, len(g.order))
	for _, p := range g.order {
		quoted := make([]string, len(g.steps[p]))
		for i, s := range g.steps[p] {
			quoted[i] = fmt.Sprintf("%q", s)
		}
		out = append(out, fmt.Sprintf("participant %q %s (step %s)", p, what, strings.Join(quoted, ", ")))
	}
	return out
}

func unknownText(unreachable, unsupported *answerGroups) string {
	parts := append(unreachable.describe("could not be asked"), unsupported.describe("does not implement the state query")...)
	return strings.Join(parts, "; ")
}

func joinViolations(vs []Violation) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.String()
	}
	return strings.Join(parts, "; ")
}

// AfterRedrive is the verdict of a check that re-sent before.Redrive: after
// is the verdict of the same saga once the participants were asked again.
// The violations of before that after no longer has (and that were
// answered) become Repaired; when a re-driven step still disagrees, the
// reason is RepairFailed and the message asks for a person.
func AfterRedrive(before, after Verdict) Verdict {
	out := after
	out.Redrive = before.Redrive
	still := map[string]bool{}
	for _, s := range after.Unanswered {
		still[s] = true
	}
	for _, v := range after.Violations {
		still[v.Step] = true
	}
	out.Repaired = nil
	for _, v := range before.Violations {
		if !still[v.Step] {
			out.Repaired = append(out.Repaired, v)
		}
	}
	redriven := map[string]bool{}
	for _, c := range before.Redrive {
		redriven[c.Step] = true
	}
	var failed []Violation
	for _, v := range after.Violations {
		if redriven[v.Step] {
			failed = append(failed, v)
		}
	}
	switch {
	case len(failed) > 0:
		out.Reason = sagav1.ReasonRepairFailed
		out.Message = Truncate(fmt.Sprintf("still inconsistent after re-sending %d call(s) with their original idempotency keys; a person must act: %s",
			len(before.Redrive), after.Message), MaxConsistencyMessageBytes)
	case out.Status == metav1.ConditionTrue && len(out.Repaired) > 0:
		out.Message = Truncate(fmt.Sprintf("repaired by re-sending %s with the original idempotency key(s); %s",
			callList(before.Redrive), after.Message), MaxConsistencyMessageBytes)
	}
	return out
}

func callList(cs []Call) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = fmt.Sprintf("%s %q", c.Direction, c.Step)
	}
	return strings.Join(parts, ", ")
}

// NewViolations returns the violations of v (repaired ones first) whose
// step status does not list yet: the ones RecordCheck reports as new.
func NewViolations(status *sagav1.OrderSagaStatus, v Verdict) []Violation {
	var out []Violation
	for _, x := range append(append([]Violation(nil), v.Repaired...), v.Violations...) {
		if !slices.Contains(status.ConsistencyViolations, x.Step) {
			out = append(out, x)
		}
	}
	return out
}

// RecordCheck writes a check's verdict into status: the Consistent
// condition (observedGeneration set; lastTransitionTime now when its status
// changes), lastConsistencyCheck (now) and consistencyViolations: the steps
// of v.Violations, plus the steps listed before that got no answer this
// time (a violation is not forgotten because its participant is down).
// The status is then compacted as Decide does, so it stays within
// MaxStatusBytes.
//
// It returns the transitions worth an Event: a Warning for each violation
// (found or repaired) whose step was not listed before, with the
// violation's kind as reason; a Warning RepairFailed for a re-driven step
// that still disagrees, when it is new or the condition was not already
// RepairFailed; a Normal Repaired when a redrive made violations go away; a
// Normal Consistent when the list empties on a True verdict without a
// repair. A check that confirms what the status already says returns none.
func RecordCheck(status *sagav1.OrderSagaStatus, generation int64, now time.Time, v Verdict) []Transition {
	prev := map[string]bool{}
	for _, s := range status.ConsistencyViolations {
		prev[s] = true
	}
	prevReason := ""
	if c := meta.FindStatusCondition(status.Conditions, sagav1.ConsistentCondition); c != nil {
		prevReason = c.Reason
	}
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{
		Type:               sagav1.ConsistentCondition,
		Status:             v.Status,
		ObservedGeneration: generation,
		LastTransitionTime: metav1.NewTime(now),
		Reason:             v.Reason,
		Message:            v.Message,
	})
	t := metav1.NewTime(now)
	status.LastConsistencyCheck = &t

	listed := map[string]bool{}
	for _, x := range v.Violations {
		listed[x.Step] = true
	}
	for _, s := range v.Unanswered {
		if prev[s] {
			listed[s] = true
		}
	}
	var list []string
	for _, s := range status.Steps { // spec order
		if listed[s.Name] {
			list = append(list, s.Name)
			delete(listed, s.Name)
		}
	}
	for _, s := range status.ConsistencyViolations {
		if listed[s] { // a step the status does not record (not written by Decide)
			list = append(list, s)
			delete(listed, s)
		}
	}
	for _, x := range v.Violations {
		if listed[x.Step] {
			list = append(list, x.Step)
			delete(listed, x.Step)
		}
	}
	status.ConsistencyViolations = list
	compact(status)

	redriven := map[string]bool{}
	if v.Reason == sagav1.ReasonRepairFailed {
		for _, c := range v.Redrive {
			redriven[c.Step] = true
		}
	}
	var ts []Transition
	warn := func(x Violation, reason, msg string) {
		if !prev[x.Step] {
			ts = append(ts, Transition{Step: x.Step, Warning: true, Reason: reason, Message: msg})
		}
	}
	for _, x := range v.Repaired {
		warn(x, x.Kind, Truncate(x.String(), maxEventBytes))
	}
	for _, x := range v.Violations {
		if redriven[x.Step] {
			if !prev[x.Step] || prevReason != sagav1.ReasonRepairFailed {
				ts = append(ts, Transition{Step: x.Step, Warning: true, Reason: sagav1.ReasonRepairFailed, Message: Truncate(fmt.Sprintf(
					"step %q at participant %q: expected %s, still %s after its call was re-sent with the original idempotency key: a person must act",
					x.Step, x.Participant, x.Expected, x.Actual), maxEventBytes)})
			}
			continue
		}
		warn(x, x.Kind, Truncate(x.String(), maxEventBytes))
	}
	switch {
	case len(v.Repaired) > 0:
		parts := make([]string, len(v.Repaired))
		for i, x := range v.Repaired {
			parts[i] = fmt.Sprintf("step %q at participant %q is %s again (it was %s)", x.Step, x.Participant, x.Expected, x.Actual)
		}
		ts = append(ts, Transition{Reason: sagav1.ReasonRepaired, Message: Truncate(
			"repaired by re-sending the call with its original idempotency key: "+strings.Join(parts, "; "), maxEventBytes)})
	case v.Status == metav1.ConditionTrue && len(prev) > 0:
		ts = append(ts, Transition{Reason: sagav1.ReasonConsistent, Message: Truncate(v.Message, maxEventBytes)})
	}
	return ts
}
