// Package saga is the pure state machine of an OrderSaga: given the spec, the
// status (the saga log), the time and the result of the last call, it says
// what to do next and what the status becomes. It does no I/O and has no
// clock of its own, so every rule of the design is table-tested here.
package saga

import (
	"time"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// Policy is the resolved call settings of one step in one direction: the
// Participant's defaults overridden by the step's own.
type Policy struct {
	// Timeout bounds each call.
	Timeout time.Duration
	// MaxAttempts is the number of calls before the outcome is decided
	// without a definitive answer; 0 means unlimited.
	MaxAttempts int32
	// InitialBackoff is the wait before the second attempt; it doubles each
	// attempt up to MaxBackoff, with jitter.
	InitialBackoff time.Duration
	// MaxBackoff caps the backoff.
	MaxBackoff time.Duration
	// MaxDuration bounds the time spent in this direction since the first
	// attempt; 0 means unlimited.
	MaxDuration time.Duration
}

// StepPolicies are the policies of one step.
type StepPolicies struct {
	Forward    Policy
	Compensate Policy
}

// Outcome classifies the answer to a call (PROTOCOL.md, "What each answer means").
type Outcome string

const (
	// OutcomeOK is a 200: forward Succeeded / compensation Compensated.
	OutcomeOK Outcome = "OK"
	// OutcomeAccepted is a 202: still working, call again after RetryAfter.
	OutcomeAccepted Outcome = "Accepted"
	// OutcomeRejected is a 409/422 or a permanent 4xx: definitive.
	OutcomeRejected Outcome = "Rejected"
	// OutcomeTransient is a 408/425/429/5xx, a connection error, a timeout
	// or an unreadable body: retry with the same key.
	OutcomeTransient Outcome = "Transient"
	// OutcomeInvalidOutputs is a 200 whose outputs break the protocol's
	// limits: the step fails with reason InvalidOutputs.
	OutcomeInvalidOutputs Outcome = "InvalidOutputs"
)

// Result is what the last call returned.
type Result struct {
	// Step and Direction identify the call; they must match the Call the
	// previous Decide returned.
	Step      string
	Direction sagav1.Direction
	Outcome   Outcome
	// Outputs of a successful forward call.
	Outputs map[string]string
	// RetryAfter is the participant's hint (202 body or Retry-After header); 0 if none.
	RetryAfter time.Duration
	// Error describes a failed call.
	Error *sagav1.StepError
}

// Input is everything a decision depends on.
type Input struct {
	Spec *sagav1.OrderSagaSpec
	// Status is the current saga log. Decide does not modify it.
	Status *sagav1.OrderSagaStatus
	// Generation is the object's metadata.generation.
	Generation int64
	Now        time.Time
	// Policies by step name. A step missing here cannot be called (its
	// Participant was not found): Decide returns ActionBlocked for it.
	Policies map[string]StepPolicies
	// Unavailable names Participants that exist but cannot be called now
	// (for example their token Secret is missing), with the condition reason
	// and message to report. A call to one of them is Blocked like a call
	// to a missing Participant: no attempt is spent, since nothing was sent.
	Unavailable map[string]Blocker
	// Deleting is true when the object is being deleted with deletionPolicy Compensate.
	Deleting bool
	// RetryRequested is the value of the retry annotation, "" if none.
	RetryRequested string
	// Result of the call the previous Decide asked for, nil if none was made.
	Result *Result
	// Jitter returns a number in [0,1); nil means no jitter (0.5).
	Jitter func() float64
}

// ActionKind is what the caller does next.
type ActionKind string

const (
	// ActionCall: make the call in Action.Call now.
	ActionCall ActionKind = "Call"
	// ActionWait: nothing to do until Action.Until (a RequeueAfter).
	ActionWait ActionKind = "Wait"
	// ActionBlocked: the next call needs a Participant that is missing
	// (Action.Call names it); wait for it to appear.
	ActionBlocked ActionKind = "Blocked"
	// ActionSuspended: spec.suspend holds the saga.
	ActionSuspended ActionKind = "Suspended"
	// ActionDone: the saga is in a terminal phase; nothing to call.
	ActionDone ActionKind = "Done"
)

// Call is one request to a participant.
type Call struct {
	Step        string
	Participant string
	// Action is the step's action or compensation, by Direction.
	Action    string
	Direction sagav1.Direction
	// Attempt counts from 1 for each (step, direction).
	Attempt int32
	// Outputs of every step that has succeeded so far, keyed by step name.
	Outputs map[string]map[string]string
}

// Action is the decision.
type Action struct {
	Kind ActionKind
	// Call is set for ActionCall and ActionBlocked (the call that cannot be
	// made yet, naming its Participant).
	Call *Call
	// Until is, for ActionWait, when to decide again (a RequeueAfter); for
	// ActionBlocked, when the deadline will turn the saga around without the
	// Participant (zero when there is none). Zero otherwise.
	Until time.Time
	// Blocker explains an ActionBlocked; nil means the Participant is missing.
	Blocker *Blocker
}

// Blocker says why a Participant cannot be called.
type Blocker struct {
	// Reason is a condition reason from the API package.
	Reason  string
	Message string
}

// Transition is a change worth an Event: a step or the saga changed phase.
type Transition struct {
	// Step is empty for a saga-level transition.
	Step string
	// Warning is true for failures (rejections, unknown outcomes, stalls).
	Warning bool
	// Reason is a constant from the API package.
	Reason  string
	Message string
}

// Decision is the output of Decide.
type Decision struct {
	// Status is the new saga log (a copy; the input is untouched).
	Status *sagav1.OrderSagaStatus
	Action Action
	// Transitions are the changes this decision made, in order.
	Transitions []Transition
}
