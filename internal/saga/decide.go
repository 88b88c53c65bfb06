package saga

import (
	"fmt"
	"maps"
	"strings"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// History outcomes that are not phases.
const (
	// HistoryRetrying: a transient failure scheduled another attempt.
	HistoryRetrying = "Retrying"
	// HistoryAccepted: a 202 scheduled a poll (consecutive polls of the same
	// attempt are recorded once).
	HistoryAccepted = "Accepted"
	// HistoryIgnored: cancel, deadline or deletion came after a pivot.
	HistoryIgnored = "Ignored"
	// HistoryDeferred: cancel, deadline or deletion came while a pivot was in flight.
	HistoryDeferred = "Deferred"
	// HistoryRedriven: the retry annotation re-drove a Failed saga.
	HistoryRedriven = "Redriven"
)

// Decide is the saga's state machine. It returns the new status (a copy; the
// input is not modified), the next action and the transitions worth an Event.
//
// The status is the saga log and always describes the next call: a step in
// phase Running (forward) or Compensating (compensate) with attempts n is
// "call n of that step in that direction", to be made once nextAttemptTime
// (if any) has passed. A decision that starts a call writes that description
// first; the caller persists the status and then makes the call, so a crash
// at any point re-sends the same call with the same idempotency key. A
// decision given the call's Result records it and describes the following
// call in the same status, so the caller writes once per call result.
//
// Decide is deterministic (the same Input gives the same Decision, Jitter
// included) and idempotent: deciding again on its own output status with no
// Result gives the same action and an identical status, so a reconcile that
// has nothing new to record writes nothing.
//
// A Result that is not for the call the status describes (another step or
// direction, a saga that is not Running or Compensating, or a step still
// waiting for its nextAttemptTime) is stale and ignored: the call it answers
// is re-sent with the same key, which is harmless.
func Decide(in Input) Decision {
	orig := in.Status
	if orig == nil {
		orig = &sagav1.OrderSagaStatus{}
	}
	st := orig.DeepCopy()
	if in.Spec == nil || len(in.Spec.Steps) == 0 {
		return Decision{Status: st, Action: Action{Kind: ActionDone}}
	}
	d := &decider{
		in:          in,
		spec:        in.Spec,
		st:          st,
		now:         in.Now,
		prevMessage: reconcilingMessage(orig),
	}
	act := d.decide()
	d.syncCurrent()
	setConditions(st, in.Generation, in.Now, act, d.note)
	compact(st)
	if !apiequality.Semantic.DeepEqual(orig, st) {
		st.ObservedGeneration = in.Generation
	}
	return Decision{Status: st, Action: act, Transitions: d.transitions}
}

type decider struct {
	in          Input
	spec        *sagav1.OrderSagaSpec
	st          *sagav1.OrderSagaStatus
	now         time.Time
	transitions []Transition
	// note says that cancel, deadline or deletion is ignored or deferred
	// because of a pivot; it is appended to the Reconciling message, which
	// is how a later decision knows the note was already announced.
	note string
	// prevMessage is the input status's Reconciling message.
	prevMessage string
}

func (d *decider) decide() Action {
	d.ensureSteps()
	if r := d.in.Result; r != nil {
		d.apply(r)
	}
	d.observeRetry()
	return d.advance()
}

// ensureSteps gives a fresh saga its phase and one step record per spec step.
// Records are kept by name in spec order (spec.steps is immutable, so this
// only ever builds the list once).
func (d *decider) ensureSteps() {
	if d.st.Phase == "" {
		d.st.Phase = sagav1.SagaPending
	}
	same := len(d.st.Steps) == len(d.spec.Steps)
	for i := 0; same && i < len(d.spec.Steps); i++ {
		same = d.st.Steps[i].Name == d.spec.Steps[i].Name
	}
	if same {
		return
	}
	old := make(map[string]sagav1.StepStatus, len(d.st.Steps))
	for _, s := range d.st.Steps {
		old[s.Name] = s
	}
	steps := make([]sagav1.StepStatus, len(d.spec.Steps))
	for i, s := range d.spec.Steps {
		if o, ok := old[s.Name]; ok {
			steps[i] = o
			continue
		}
		steps[i] = sagav1.StepStatus{Name: s.Name, Phase: sagav1.StepPending}
	}
	d.st.Steps = steps
}

// ---------------------------------------------------------------------------
// Recording a result

// described is the call the status describes: the step and its direction,
// or -1.
func (d *decider) described() (int, sagav1.Direction) {
	switch d.st.Phase {
	case sagav1.SagaRunning:
		return d.find(sagav1.StepRunning), sagav1.Forward
	case sagav1.SagaCompensating:
		return d.find(sagav1.StepCompensating), sagav1.Compensate
	}
	return -1, ""
}

func (d *decider) apply(r *Result) {
	i, dir := d.described()
	if i < 0 || r.Step != d.st.Steps[i].Name || r.Direction != dir {
		return
	}
	if next := d.st.Steps[i].NextAttemptTime; next != nil && d.now.Before(next.Time) {
		return
	}
	if dir == sagav1.Forward {
		d.forwardResult(i, r)
	} else {
		d.compensateResult(i, r)
	}
}

func (d *decider) forwardResult(i int, r *Result) {
	ss := &d.st.Steps[i]
	pol := d.policy(i).Forward
	recovering := d.succeededPivot() >= 0
	switch r.Outcome {
	case OutcomeOK:
		if why := outputsProblem(r.Outputs, d.otherOutputs(i)); why != "" {
			d.forwardInvalidOutputs(i, why)
			return
		}
		ss.Phase = sagav1.StepSucceeded
		ss.Outputs = nil
		if len(r.Outputs) > 0 {
			ss.Outputs = maps.Clone(r.Outputs)
		}
		ss.LastError = nil
		d.settle(i, sagav1.Forward, sagav1.StepSucceeded, false, sagav1.ReasonSucceeded,
			fmt.Sprintf("step %q succeeded on attempt %d", ss.Name, ss.Attempts))

	case OutcomeInvalidOutputs:
		why := "the participant's outputs break the protocol's limits"
		if r.Error != nil && r.Error.Message != "" {
			why = r.Error.Message
		}
		d.forwardInvalidOutputs(i, why)

	case OutcomeRejected:
		ss.LastError = boundError(r.Error, string(OutcomeRejected))
		d.settle(i, sagav1.Forward, sagav1.StepFailed, true, sagav1.ReasonStepRejected,
			fmt.Sprintf("step %q rejected on attempt %d: %s", ss.Name, ss.Attempts, errorText(ss.LastError)))
		d.rollBack(i, sagav1.ReasonStepRejected, "was rejected")

	case OutcomeAccepted:
		if !recovering && d.expired(ss.StartTime, pol) {
			d.forwardUnknown(i, fmt.Sprintf("still accepted but not done after maxDuration %s", pol.MaxDuration))
			return
		}
		d.poll(i, sagav1.Forward, ss.Attempts, r.RetryAfter)

	default: // OutcomeTransient, and anything unrecognised
		ss.LastError = boundError(r.Error, string(OutcomeTransient))
		switch {
		case recovering:
			// Forward recovery: after a pivot the saga can only go forward,
			// so the step is retried however long it takes.
			d.scheduleRetry(i, sagav1.Forward, pol, r.RetryAfter)
		case pol.MaxAttempts > 0 && ss.Attempts >= pol.MaxAttempts:
			d.forwardUnknown(i, fmt.Sprintf("no definitive answer in %d attempts (last: %s)", ss.Attempts, errorText(ss.LastError)))
		case d.expired(ss.StartTime, pol):
			d.forwardUnknown(i, fmt.Sprintf("no definitive answer within maxDuration %s (last: %s)", pol.MaxDuration, errorText(ss.LastError)))
		default:
			d.scheduleRetry(i, sagav1.Forward, pol, r.RetryAfter)
		}
	}
}

// forwardInvalidOutputs handles a 200 whose outputs cannot be stored. The
// participant did apply something, so the step is not a clean rejection: it
// becomes Unknown and is compensated with the steps before it (the safe
// choice; a Failed step would never be compensated). The saga's reason is
// InvalidOutputs. Before compensation can start, a succeeded pivot makes
// this a forward-recovery failure.
func (d *decider) forwardInvalidOutputs(i int, why string) {
	ss := &d.st.Steps[i]
	ss.LastError = boundError(&sagav1.StepError{Code: sagav1.ReasonInvalidOutputs, Message: why}, sagav1.ReasonInvalidOutputs)
	d.settle(i, sagav1.Forward, sagav1.StepUnknown, true, sagav1.ReasonInvalidOutputs,
		fmt.Sprintf("step %q returned invalid outputs on attempt %d: %s", ss.Name, ss.Attempts, ss.LastError.Message))
	d.rollBack(i, sagav1.ReasonInvalidOutputs, "returned invalid outputs")
}

// settle ends step i's call in dir with phase, and records the transition
// (an Event; a Warning when warning is set).
func (d *decider) settle(i int, dir sagav1.Direction, phase sagav1.StepPhase, warning bool, reason, msg string) {
	ss := &d.st.Steps[i]
	attempt := ss.Attempts
	if dir == sagav1.Compensate {
		attempt = ss.CompensationAttempts
	}
	ss.Phase = phase
	ss.CompletionTime = d.micro()
	ss.NextAttemptTime = nil
	d.record(ss.Name, dir, attempt, string(phase), true, warning, reason, msg)
}

// rollBack starts compensating the steps before step i, which failed going
// forward; after a succeeded pivot there is no rolling back, and the saga
// fails for a person (forward recovery failed).
func (d *decider) rollBack(i int, reason, what string) {
	name := d.st.Steps[i].Name
	if p := d.succeededPivot(); p >= 0 {
		d.fail(i, sagav1.ReasonForwardRecoveryFailed, fmt.Sprintf(
			"step %q %s after pivot step %q succeeded: the saga cannot roll back nor complete", name, what, d.st.Steps[p].Name))
		return
	}
	d.startCompensation(reason, fmt.Sprintf("step %q %s", name, what))
}

// forwardUnknown: the step ran out of attempts or time without a definitive
// answer; its effect may be in place, so it is compensated first.
func (d *decider) forwardUnknown(i int, why string) {
	ss := &d.st.Steps[i]
	d.settle(i, sagav1.Forward, sagav1.StepUnknown, true, sagav1.ReasonStepUnknown,
		fmt.Sprintf("outcome of step %q is unknown: %s", ss.Name, why))
	d.startCompensation(sagav1.ReasonStepUnknown, fmt.Sprintf("the outcome of step %q is unknown", ss.Name))
}

func (d *decider) compensateResult(i int, r *Result) {
	ss := &d.st.Steps[i]
	pol := d.policy(i).Compensate
	switch r.Outcome {
	case OutcomeOK, OutcomeInvalidOutputs:
		// A 200 to a compensating call means Compensated; its outputs are
		// not used, so outputs over the limits do not matter.
		ss.LastError = nil
		d.settle(i, sagav1.Compensate, sagav1.StepCompensated, false, sagav1.ReasonCompensated,
			fmt.Sprintf("step %q compensated on attempt %d", ss.Name, ss.CompensationAttempts))

	case OutcomeRejected:
		ss.LastError = boundError(r.Error, string(OutcomeRejected))
		d.compensationFailed(i, fmt.Sprintf("compensation of step %q refused on attempt %d: %s", ss.Name, ss.CompensationAttempts, errorText(ss.LastError)))

	case OutcomeAccepted:
		if d.expired(ss.CompensationStartTime, pol) {
			d.compensationFailed(i, fmt.Sprintf("compensation of step %q still accepted but not done after maxDuration %s", ss.Name, pol.MaxDuration))
			return
		}
		d.poll(i, sagav1.Compensate, ss.CompensationAttempts, r.RetryAfter)

	default:
		ss.LastError = boundError(r.Error, string(OutcomeTransient))
		switch {
		case pol.MaxAttempts > 0 && ss.CompensationAttempts >= pol.MaxAttempts:
			d.compensationFailed(i, fmt.Sprintf("compensation of step %q gave no definitive answer in %d attempts (last: %s)", ss.Name, ss.CompensationAttempts, errorText(ss.LastError)))
		case d.expired(ss.CompensationStartTime, pol):
			d.compensationFailed(i, fmt.Sprintf("compensation of step %q gave no definitive answer within maxDuration %s (last: %s)", ss.Name, pol.MaxDuration, errorText(ss.LastError)))
		default:
			d.scheduleRetry(i, sagav1.Compensate, pol, r.RetryAfter)
		}
	}
}

func (d *decider) compensationFailed(i int, msg string) {
	d.settle(i, sagav1.Compensate, sagav1.StepCompensationFailed, true, sagav1.ReasonCompensationFailed, msg)
	d.fail(i, sagav1.ReasonCompensationFailed, msg)
}

// scheduleRetry counts the next attempt and sets when it may be made: the
// jittered exponential backoff, or the participant's Retry-After when longer.
func (d *decider) scheduleRetry(i int, dir sagav1.Direction, pol Policy, retryAfter time.Duration) {
	ss := &d.st.Steps[i]
	attempts := &ss.Attempts
	if dir == sagav1.Compensate {
		attempts = &ss.CompensationAttempts
	}
	failed := *attempts
	wait := Backoff(pol, failed, d.jitter())
	if retryAfter > wait {
		wait = retryAfter
	}
	*attempts = failed + 1
	next := ceilMicro(d.now.Add(wait))
	ss.NextAttemptTime = &next
	d.record(ss.Name, dir, failed, HistoryRetrying, false, false, "",
		fmt.Sprintf("%s; attempt %d at %s", errorText(ss.LastError), failed+1, next.UTC().Format(time.RFC3339)))
}

// poll handles a 202: call again with the same attempt number after the
// participant's hint (1s by default). Polls do not count as attempts.
func (d *decider) poll(i int, dir sagav1.Direction, attempt int32, retryAfter time.Duration) {
	ss := &d.st.Steps[i]
	if retryAfter <= 0 {
		retryAfter = DefaultAcceptedRetryAfter
	}
	next := ceilMicro(d.now.Add(retryAfter))
	ss.NextAttemptTime = &next
	if h := d.st.History; len(h) > 0 {
		last := h[len(h)-1]
		if last.Outcome == HistoryAccepted && last.Step == ss.Name && last.Direction == dir && last.Attempt == attempt {
			return
		}
	}
	d.record(ss.Name, dir, attempt, HistoryAccepted, false, false, "",
		fmt.Sprintf("accepted, not done yet; polling at %s", next.UTC().Format(time.RFC3339)))
}

// expired reports whether maxDuration has passed since start.
func (d *decider) expired(start *metav1.MicroTime, pol Policy) bool {
	if pol.MaxDuration <= 0 || start == nil {
		return false
	}
	return d.now.After(start.Add(pol.MaxDuration))
}

// ---------------------------------------------------------------------------
// Retry annotation

// observeRetry acts on a new value of the retry annotation. Its value is
// recorded in every phase (so that a value set while the saga runs does not
// re-drive a later failure); only a Failed saga is re-driven:
//   - a step whose compensation failed goes back to Compensating with a fresh
//     attempt count and compensationStartTime;
//   - a Failed (rejected after a pivot) or Unknown step (invalid outputs
//     after a pivot, or a pivot whose outcome is unknown) is called forward
//     again with the same key and a fresh attempt count; Skipped steps go back
//     to Pending since the saga may now go forward.
func (d *decider) observeRetry() {
	if d.in.RetryRequested == "" {
		return
	}
	tok := retryToken(d.in.RetryRequested)
	if tok == d.st.ObservedRetry {
		return
	}
	d.st.ObservedRetry = tok
	if d.st.Phase != sagav1.SagaFailed {
		return
	}
	i := d.stuckStep()
	if i < 0 {
		return
	}
	ss := &d.st.Steps[i]
	via := fmt.Sprintf("re-driven by annotation %s=%q", sagav1.RetryAnnotation, Truncate(d.in.RetryRequested, 64))
	switch ss.Phase {
	case sagav1.StepCompensationFailed:
		ss.Phase = sagav1.StepCompensating
		ss.CompensationAttempts = 1
		ss.CompensationStartTime = d.micro()
		ss.NextAttemptTime = nil
		d.st.Phase = sagav1.SagaCompensating
		d.st.CompletionTime = nil
		d.record(ss.Name, sagav1.Compensate, 1, HistoryRedriven, true, false, sagav1.ReasonCompensating,
			fmt.Sprintf("%s: compensating step %q again", via, ss.Name))
	case sagav1.StepFailed, sagav1.StepUnknown:
		for k := range d.st.Steps {
			switch d.st.Steps[k].Phase {
			case sagav1.StepCompensating, sagav1.StepCompensated, sagav1.StepCompensationFailed:
				// Something was undone already: going forward again would
				// mix both directions. Nothing to re-drive.
				return
			}
		}
		for k := range d.st.Steps {
			if d.st.Steps[k].Phase == sagav1.StepSkipped {
				d.st.Steps[k].Phase = sagav1.StepPending
			}
		}
		ss.Phase = sagav1.StepRunning
		ss.Attempts = 1
		ss.StartTime = d.micro()
		ss.CompletionTime = nil
		ss.NextAttemptTime = nil
		d.st.Phase = sagav1.SagaRunning
		d.st.CompensationReason = ""
		d.st.CompletionTime = nil
		d.record(ss.Name, sagav1.Forward, 1, HistoryRedriven, true, false, sagav1.ReasonProgressing,
			fmt.Sprintf("%s: calling step %q forward again", via, ss.Name))
	}
}

// stuckStep is the step a Failed saga stopped at.
func (d *decider) stuckStep() int {
	if i := d.index(d.st.CurrentStep); i >= 0 {
		switch d.st.Steps[i].Phase {
		case sagav1.StepCompensationFailed, sagav1.StepFailed, sagav1.StepUnknown:
			return i
		}
	}
	if i := d.find(sagav1.StepCompensationFailed); i >= 0 {
		return i
	}
	return -1
}

// ---------------------------------------------------------------------------
// Choosing the next action

func (d *decider) advance() Action {
	// Each pass either returns or moves the saga to a later phase
	// (Pending -> Running -> Compensating -> terminal), so this ends.
	for range 4 {
		var (
			act  Action
			done bool
		)
		switch d.st.Phase {
		case sagav1.SagaPending:
			act, done = d.pending()
		case sagav1.SagaRunning:
			act, done = d.running()
		case sagav1.SagaCompensating:
			act, done = d.compensating()
		default:
			return Action{Kind: ActionDone}
		}
		if done {
			return act
		}
	}
	return Action{Kind: ActionDone}
}

func (d *decider) pending() (Action, bool) {
	if reason := d.stopReason(); reason != "" {
		// Nothing was called: nothing to undo.
		for i := range d.st.Steps {
			d.st.Steps[i].Phase = sagav1.StepSkipped
		}
		d.st.Phase = sagav1.SagaCompensated
		d.st.CompensationReason = reason
		d.st.CompletionTime = d.time()
		d.record("", "", 0, string(sagav1.SagaCompensated), true, false, sagav1.ReasonCompensated,
			fmt.Sprintf("saga %s before its first call: no step ran, nothing to compensate", stopVerb(reason)))
		return Action{Kind: ActionDone}, true
	}
	if d.spec.Suspend {
		return Action{Kind: ActionSuspended}, true
	}
	call := d.call(0, sagav1.Forward, 1)
	if !d.hasPolicy(0) {
		return Action{Kind: ActionBlocked, Call: call, Blocker: d.blocker(0)}, true
	}
	d.st.Phase = sagav1.SagaRunning
	d.st.StartTime = d.time()
	d.startForward(0)
	return Action{Kind: ActionCall, Call: call}, true
}

func (d *decider) running() (Action, bool) {
	// Suspend holds everything, cancel and deadline included: they act when
	// the saga is resumed.
	if d.spec.Suspend {
		return Action{Kind: ActionSuspended}, true
	}
	i := d.find(sagav1.StepRunning)
	var deadlineAt time.Time
	if reason, cause := d.override(); reason != "" {
		switch p := d.succeededPivot(); {
		case p >= 0:
			d.setNote(reason, HistoryIgnored, fmt.Sprintf("%s ignored: pivot step %q has succeeded, the saga can only go forward",
				overrideLabel(reason), d.st.Steps[p].Name))
		case i >= 0 && d.isPivot(i):
			// Marking an in-flight pivot Unknown would leave a step that
			// cannot be compensated; its outcome decides instead: success
			// means forward recovery, rejection or an unknown outcome
			// are handled as for any pivot.
			d.setNote(reason, HistoryDeferred, fmt.Sprintf("%s deferred: pivot step %q is in flight and cannot be compensated, waiting for its outcome",
				overrideLabel(reason), d.st.Steps[i].Name))
		default:
			d.startCompensation(reason, cause)
			return Action{}, false
		}
	} else if d.succeededPivot() < 0 && !(i >= 0 && d.isPivot(i)) {
		deadlineAt = d.deadline()
	}
	if i >= 0 {
		return d.callOrWait(i, sagav1.Forward, deadlineAt), true
	}
	if j := d.find(sagav1.StepPending); j >= 0 {
		call := d.call(j, sagav1.Forward, 1)
		if !d.hasPolicy(j) {
			return Action{Kind: ActionBlocked, Call: call, Until: deadlineAt, Blocker: d.blocker(j)}, true
		}
		d.startForward(j)
		return Action{Kind: ActionCall, Call: call}, true
	}
	for k, s := range d.st.Steps {
		if s.Phase == sagav1.StepSucceeded {
			continue
		}
		// A log where a step ended without the saga reacting (not written
		// by this package): react now as its result would have.
		if p := d.succeededPivot(); p >= 0 {
			d.fail(k, sagav1.ReasonForwardRecoveryFailed, fmt.Sprintf("step %q is %s after pivot step %q succeeded", s.Name, s.Phase, d.st.Steps[p].Name))
			return Action{Kind: ActionDone}, true
		}
		d.startCompensation(sagav1.ReasonStepUnknown, fmt.Sprintf("step %q is %s", s.Name, s.Phase))
		return Action{}, false
	}
	d.st.Phase = sagav1.SagaSucceeded
	d.st.CompletionTime = d.time()
	d.record("", "", 0, string(sagav1.SagaSucceeded), true, false, sagav1.ReasonSucceeded,
		fmt.Sprintf("saga succeeded: all %d steps succeeded", len(d.st.Steps)))
	return Action{Kind: ActionDone}, true
}

func (d *decider) compensating() (Action, bool) {
	if d.spec.Suspend {
		return Action{Kind: ActionSuspended}, true
	}
	if i := d.find(sagav1.StepCompensating); i >= 0 {
		return d.callOrWait(i, sagav1.Compensate, time.Time{}), true
	}
	j := d.nextToUndo()
	if j < 0 {
		n := 0
		for _, s := range d.st.Steps {
			if s.Phase == sagav1.StepCompensated {
				n++
			}
		}
		d.st.Phase = sagav1.SagaCompensated
		d.st.CompletionTime = d.time()
		d.record("", "", 0, string(sagav1.SagaCompensated), true, false, sagav1.ReasonCompensated,
			fmt.Sprintf("saga rolled back (%s): %d step(s) compensated", d.st.CompensationReason, n))
		return Action{Kind: ActionDone}, true
	}
	if d.spec.Steps[j].Compensation == "" {
		// A pivot whose outcome is unknown (it ran out of attempts, or
		// returned invalid outputs): it cannot be undone, and undoing the
		// steps before it would be wrong if it did apply. A person decides;
		// the retry annotation calls it forward again with the same key,
		// which settles its outcome.
		s := d.st.Steps[j]
		d.fail(j, sagav1.ReasonCompensationFailed, fmt.Sprintf(
			"step %q has no compensation and its outcome is %s: the saga cannot roll back", s.Name, s.Phase))
		return Action{Kind: ActionDone}, true
	}
	call := d.call(j, sagav1.Compensate, 1)
	if !d.hasPolicy(j) {
		return Action{Kind: ActionBlocked, Call: call, Blocker: d.blocker(j)}, true
	}
	d.startCompensate(j)
	return Action{Kind: ActionCall, Call: call}, true
}

// callOrWait is the action for the call the status describes for step i:
// wait for its nextAttemptTime (or for capAt, the deadline, if earlier), or
// make it. A Blocked call carries capAt as Until: the deadline acts even
// while the participant is missing.
func (d *decider) callOrWait(i int, dir sagav1.Direction, capAt time.Time) Action {
	ss := d.st.Steps[i]
	if next := ss.NextAttemptTime; next != nil && d.now.Before(next.Time) {
		until := next.Time
		if !capAt.IsZero() && capAt.Before(until) {
			until = capAt
		}
		return Action{Kind: ActionWait, Until: until}
	}
	attempt := ss.Attempts
	if dir == sagav1.Compensate {
		attempt = ss.CompensationAttempts
	}
	call := d.call(i, dir, attempt)
	if !d.hasPolicy(i) {
		return Action{Kind: ActionBlocked, Call: call, Until: capAt, Blocker: d.blocker(i)}
	}
	return Action{Kind: ActionCall, Call: call}
}

func (d *decider) startForward(i int) {
	ss := &d.st.Steps[i]
	ss.Phase = sagav1.StepRunning
	ss.Attempts = 1
	ss.StartTime = d.micro()
	ss.CompletionTime = nil
	ss.NextAttemptTime = nil
	ss.LastError = nil
}

func (d *decider) startCompensate(i int) {
	ss := &d.st.Steps[i]
	ss.Phase = sagav1.StepCompensating
	ss.CompensationAttempts = 1
	ss.CompensationStartTime = d.micro()
	ss.NextAttemptTime = nil
}

// startCompensation turns the saga around: steps never started are Skipped,
// a step in flight becomes Unknown (its call may have landed), and the steps
// Succeeded or Unknown are then undone in reverse order by compensating().
func (d *decider) startCompensation(reason, cause string) {
	d.st.Phase = sagav1.SagaCompensating
	d.st.CompensationReason = reason
	n := 0
	for i := range d.st.Steps {
		ss := &d.st.Steps[i]
		switch ss.Phase {
		case sagav1.StepPending:
			ss.Phase = sagav1.StepSkipped
		case sagav1.StepRunning:
			d.settle(i, sagav1.Forward, sagav1.StepUnknown, true, sagav1.ReasonStepUnknown,
				fmt.Sprintf("step %q was in flight (attempt %d) when %s: its outcome is unknown", ss.Name, ss.Attempts, cause))
		}
		if ss.Phase == sagav1.StepSucceeded || ss.Phase == sagav1.StepUnknown {
			n++
		}
	}
	// A rollback the user asked for (cancel, deletion) is not a failure.
	warning := reason != sagav1.ReasonCancelled && reason != sagav1.ReasonDeleted
	d.record("", "", 0, string(sagav1.SagaCompensating), true, warning, sagav1.ReasonCompensating,
		fmt.Sprintf("compensating %d step(s) in reverse order: %s", n, cause))
}

// fail ends the saga in Failed at step i: the dead letter.
func (d *decider) fail(i int, reason, msg string) {
	ss := d.st.Steps[i]
	d.st.Phase = sagav1.SagaFailed
	d.st.CompletionTime = d.time()
	d.st.CurrentStep = ss.Name
	d.st.Attempts = ss.Attempts
	if ss.Phase == sagav1.StepCompensationFailed {
		d.st.Attempts = ss.CompensationAttempts
	}
	d.record("", "", 0, string(sagav1.SagaFailed), true, true, reason,
		fmt.Sprintf("saga failed at step %q (set annotation %s to a new value to re-drive): %s", ss.Name, sagav1.RetryAnnotation, msg))
}

// setNote announces, once, that an override is ignored or deferred.
func (d *decider) setNote(reason, outcome, msg string) {
	d.note = msg
	if !strings.Contains(d.prevMessage, msg) {
		d.record("", "", 0, outcome, true, false, reason, msg)
	}
}

// syncCurrent makes status.currentStep and status.attempts mirror the call
// the status describes (or the one that would come next when it cannot be
// made yet). A Failed saga keeps the step it stopped at; the other
// terminal phases clear both.
func (d *decider) syncCurrent() {
	name, attempts := "", int32(0)
	switch d.st.Phase {
	case sagav1.SagaRunning:
		i := d.find(sagav1.StepRunning)
		if i < 0 {
			i = d.find(sagav1.StepPending)
		}
		if i >= 0 {
			name, attempts = d.st.Steps[i].Name, d.st.Steps[i].Attempts
		}
	case sagav1.SagaCompensating:
		i := d.find(sagav1.StepCompensating)
		if i < 0 {
			i = d.nextToUndo()
		}
		if i >= 0 {
			name, attempts = d.st.Steps[i].Name, d.st.Steps[i].CompensationAttempts
		}
	case sagav1.SagaFailed:
		return
	}
	d.st.CurrentStep, d.st.Attempts = name, attempts
}

// ---------------------------------------------------------------------------
// Helpers

// stopReason is why a saga that has not started must not start: deletion or
// cancel.
func (d *decider) stopReason() string {
	switch {
	case d.in.Deleting:
		return sagav1.ReasonDeleted
	case d.spec.Cancel:
		return sagav1.ReasonCancelled
	}
	return ""
}

// override is why a running saga must turn around, with a cause for
// messages: deletion, cancel, or the deadline (reached when now >=
// startTime + deadline, so that a wake-up at exactly the deadline acts).
func (d *decider) override() (string, string) {
	if r := d.stopReason(); r != "" {
		if r == sagav1.ReasonDeleted {
			return r, "the saga is being deleted"
		}
		return r, "the saga was cancelled"
	}
	if at := d.deadline(); !at.IsZero() && !d.now.Before(at) {
		return sagav1.ReasonDeadlineExceeded, fmt.Sprintf("the deadline of %s passed at %s", d.spec.Deadline.Duration, at.UTC().Format(time.RFC3339))
	}
	return "", ""
}

func (d *decider) deadline() time.Time {
	if d.spec.Deadline == nil || d.spec.Deadline.Duration <= 0 || d.st.StartTime == nil {
		return time.Time{}
	}
	return d.st.StartTime.Add(d.spec.Deadline.Duration)
}

func overrideLabel(reason string) string {
	switch reason {
	case sagav1.ReasonDeleted:
		return "deletion"
	case sagav1.ReasonCancelled:
		return "cancel"
	}
	return "deadline"
}

func stopVerb(reason string) string {
	if reason == sagav1.ReasonDeleted {
		return "deleted"
	}
	return "cancelled"
}

func (d *decider) call(i int, dir sagav1.Direction, attempt int32) *Call {
	s := d.spec.Steps[i]
	c := &Call{Step: s.Name, Participant: s.Participant, Action: s.Action, Direction: dir, Attempt: attempt}
	if dir == sagav1.Compensate {
		c.Action = s.Compensation
	}
	for _, ss := range d.st.Steps {
		if len(ss.Outputs) == 0 {
			continue
		}
		if c.Outputs == nil {
			c.Outputs = map[string]map[string]string{}
		}
		c.Outputs[ss.Name] = maps.Clone(ss.Outputs)
	}
	return c
}

func (d *decider) hasPolicy(i int) bool {
	if _, blocked := d.in.Unavailable[d.spec.Steps[i].Participant]; blocked {
		return false
	}
	_, ok := d.in.Policies[d.spec.Steps[i].Name]
	return ok
}

// blocker says why step i cannot be called: nil for a missing Participant.
func (d *decider) blocker(i int) *Blocker {
	if b, ok := d.in.Unavailable[d.spec.Steps[i].Participant]; ok {
		return &b
	}
	return nil
}

// policy is step i's policy; a result for a step whose Participant vanished
// meanwhile is recorded with the defaults (its next call is Blocked anyway).
func (d *decider) policy(i int) StepPolicies {
	p, ok := d.in.Policies[d.spec.Steps[i].Name]
	if !ok {
		p = DefaultPolicies()
	}
	p.Forward = p.Forward.Normalize()
	p.Compensate = p.Compensate.Normalize()
	return p
}

func (d *decider) isPivot(i int) bool { return d.spec.Steps[i].Compensation == "" }

// succeededPivot is the index of a pivot step that has succeeded, or -1.
func (d *decider) succeededPivot() int {
	for i, s := range d.st.Steps {
		if s.Phase == sagav1.StepSucceeded && d.isPivot(i) {
			return i
		}
	}
	return -1
}

// nextToUndo is the last step that is Succeeded or Unknown, or -1.
func (d *decider) nextToUndo() int {
	for i := len(d.st.Steps) - 1; i >= 0; i-- {
		switch d.st.Steps[i].Phase {
		case sagav1.StepSucceeded, sagav1.StepUnknown:
			return i
		}
	}
	return -1
}

func (d *decider) find(phase sagav1.StepPhase) int {
	for i, s := range d.st.Steps {
		if s.Phase == phase {
			return i
		}
	}
	return -1
}

func (d *decider) index(name string) int {
	if name == "" {
		return -1
	}
	for i, s := range d.st.Steps {
		if s.Name == name {
			return i
		}
	}
	return -1
}

func (d *decider) otherOutputs(i int) int {
	n := 0
	for k, s := range d.st.Steps {
		if k != i {
			n += outputsSize(s.Outputs)
		}
	}
	return n
}

func (d *decider) jitter() float64 {
	if d.in.Jitter == nil {
		return 0.5
	}
	return clampJitter(d.in.Jitter())
}

// micro is now with the microsecond precision step times are stored with.
func (d *decider) micro() *metav1.MicroTime {
	t := metav1.NewMicroTime(d.now)
	return &t
}

func (d *decider) time() *metav1.Time {
	t := metav1.NewTime(d.now)
	return &t
}

// record appends a history entry and, when event is set, a transition.
func (d *decider) record(step string, dir sagav1.Direction, attempt int32, outcome string, event, warning bool, reason, msg string) {
	msg = Truncate(msg, MaxHistoryMessageBytes)
	d.st.History = append(d.st.History, sagav1.HistoryEntry{
		Time:      metav1.NewTime(d.now),
		Step:      step,
		Direction: dir,
		Attempt:   attempt,
		Outcome:   outcome,
		Message:   msg,
	})
	if event {
		d.transitions = append(d.transitions, Transition{Step: step, Warning: warning, Reason: reason, Message: msg})
	}
}

// ceilMicro rounds t up to a whole microsecond, the precision step times are
// stored with, so a wait read back from the API server never ends early.
func ceilMicro(t time.Time) metav1.MicroTime {
	if r := t.Truncate(time.Microsecond); !r.Equal(t) {
		t = r.Add(time.Microsecond)
	}
	return metav1.NewMicroTime(t)
}

func errorText(e *sagav1.StepError) string {
	if e == nil {
		return "no details"
	}
	s := e.Code
	if e.HTTPStatus != 0 {
		s = fmt.Sprintf("%s (HTTP %d)", s, e.HTTPStatus)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func reconcilingMessage(st *sagav1.OrderSagaStatus) string {
	if c := meta.FindStatusCondition(st.Conditions, sagav1.ReconcilingCondition); c != nil {
		return c.Message
	}
	return ""
}
