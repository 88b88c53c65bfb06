package saga

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// SetConditions sets the kstatus conditions of a saga from its phase and
// the action decided for it (the Consistent condition is left alone):
//
//   - Reconciling=True while Pending, Running or Compensating, with reason
//     Pending, Progressing, Compensating, Retrying (waiting for the next
//     attempt) or Suspended; removed in terminal phases.
//   - Ready=True (Succeeded) only when the saga Succeeded; otherwise False
//     with the phase's reason (the same as Reconciling while in progress,
//     Compensated, or the Stalled reason when Failed).
//   - Stalled=True when the saga Failed (CompensationFailed when it failed
//     while rolling back, ForwardRecoveryFailed when it failed going forward
//     after a pivot), when the action is Blocked (ParticipantNotFound), or
//     when it was rolled back because a participant returned invalid outputs
//     (InvalidOutputs); removed otherwise.
//
// now is the lastTransitionTime of a condition whose status changes;
// meta.SetStatusCondition keeps it otherwise, so setting the same
// conditions twice changes nothing. Decide already calls this; the
// controller only needs it for a status it builds itself.
func SetConditions(status *sagav1.OrderSagaStatus, generation int64, now time.Time, action Action) {
	setConditions(status, generation, now, action, "")
}

func setConditions(st *sagav1.OrderSagaStatus, generation int64, now time.Time, act Action, note string) {
	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type:               typ,
			Status:             status,
			ObservedGeneration: generation,
			LastTransitionTime: metav1.NewTime(now),
			Reason:             reason,
			Message:            msg,
		})
	}
	remove := func(typ string) { meta.RemoveStatusCondition(&st.Conditions, typ) }

	switch st.Phase {
	case sagav1.SagaSucceeded:
		set(sagav1.ReadyCondition, metav1.ConditionTrue, sagav1.ReasonSucceeded, fmt.Sprintf("all %d steps succeeded", len(st.Steps)))
		remove(sagav1.ReconcilingCondition)
		remove(sagav1.StalledCondition)
	case sagav1.SagaCompensated:
		set(sagav1.ReadyCondition, metav1.ConditionFalse, sagav1.ReasonCompensated, fmt.Sprintf("the saga was rolled back (%s)", st.CompensationReason))
		remove(sagav1.ReconcilingCondition)
		if st.CompensationReason == sagav1.ReasonInvalidOutputs {
			// Rolled back cleanly, but a participant breaks the protocol's
			// limits on outputs: a person must fix it before sagas can pass.
			set(sagav1.StalledCondition, metav1.ConditionTrue, sagav1.ReasonInvalidOutputs,
				"a participant returned outputs over the protocol's limits and the saga was rolled back; see status.history")
		} else {
			remove(sagav1.StalledCondition)
		}
	case sagav1.SagaFailed:
		reason, msg := failedCondition(st)
		set(sagav1.ReadyCondition, metav1.ConditionFalse, reason, msg)
		set(sagav1.StalledCondition, metav1.ConditionTrue, reason, msg)
		remove(sagav1.ReconcilingCondition)
	default:
		reason, msg := progressCondition(st, act)
		if note != "" {
			msg += "; " + note
		}
		set(sagav1.ReconcilingCondition, metav1.ConditionTrue, reason, msg)
		set(sagav1.ReadyCondition, metav1.ConditionFalse, reason, msg)
		if act.Kind == ActionBlocked && act.Call != nil {
			reason := sagav1.ReasonParticipantNotFound
			msg := fmt.Sprintf("participant %q of step %q not found", act.Call.Participant, act.Call.Step)
			if act.Blocker != nil {
				reason = act.Blocker.Reason
				msg = fmt.Sprintf("participant %q of step %q cannot be called: %s", act.Call.Participant, act.Call.Step, act.Blocker.Message)
			}
			set(sagav1.StalledCondition, metav1.ConditionTrue, reason, msg)
		} else {
			remove(sagav1.StalledCondition)
		}
	}
}

func progressCondition(st *sagav1.OrderSagaStatus, act Action) (string, string) {
	if act.Kind == ActionSuspended {
		return sagav1.ReasonSuspended, "spec.suspend is true: no new call starts"
	}
	reason := sagav1.ReasonProgressing
	what := "calling step"
	switch st.Phase {
	case sagav1.SagaPending:
		reason = sagav1.ReasonPending
	case sagav1.SagaCompensating:
		reason = sagav1.ReasonCompensating
		what = "compensating step"
	}
	switch act.Kind {
	case ActionBlocked:
		if act.Call != nil {
			if act.Blocker != nil {
				return reason, fmt.Sprintf("waiting for participant %q to be callable before %s %q", act.Call.Participant, what, act.Call.Step)
			}
			return reason, fmt.Sprintf("waiting for participant %q to exist before %s %q", act.Call.Participant, what, act.Call.Step)
		}
	case ActionWait:
		for _, s := range st.Steps {
			if s.Name == st.CurrentStep && s.NextAttemptTime != nil {
				return sagav1.ReasonRetrying, fmt.Sprintf("%s %q: attempt %d at %s", what, s.Name, st.Attempts, s.NextAttemptTime.UTC().Format(time.RFC3339))
			}
		}
		return sagav1.ReasonRetrying, fmt.Sprintf("%s %q: waiting until %s", what, st.CurrentStep, act.Until.UTC().Format(time.RFC3339))
	case ActionCall:
		if act.Call != nil {
			return reason, fmt.Sprintf("%s %q (attempt %d)", what, act.Call.Step, act.Call.Attempt)
		}
	}
	if st.Phase == sagav1.SagaPending {
		return reason, "waiting for the first call"
	}
	return reason, fmt.Sprintf("%s %q", what, st.CurrentStep)
}

// failedCondition is the reason and message of a Failed saga: it failed
// while rolling back (compensationReason set) or going forward after a pivot.
func failedCondition(st *sagav1.OrderSagaStatus) (string, string) {
	reason := sagav1.ReasonForwardRecoveryFailed
	if st.CompensationReason != "" {
		reason = sagav1.ReasonCompensationFailed
	}
	var step *sagav1.StepStatus
	for i := range st.Steps {
		if st.Steps[i].Name == st.CurrentStep {
			step = &st.Steps[i]
		}
	}
	hint := fmt.Sprintf("set annotation %s to a new value to re-drive", sagav1.RetryAnnotation)
	if step == nil {
		return reason, "the saga needs manual intervention; " + hint
	}
	var what string
	switch {
	case step.Phase == sagav1.StepCompensationFailed:
		what = fmt.Sprintf("compensation of step %q failed", step.Name)
	case reason == sagav1.ReasonCompensationFailed:
		what = fmt.Sprintf("step %q has no compensation and its outcome is %s", step.Name, step.Phase)
	default:
		what = fmt.Sprintf("step %q is %s after a pivot succeeded", step.Name, step.Phase)
	}
	if step.LastError != nil {
		what += " (" + Truncate(errorText(step.LastError), 128) + ")"
	}
	return reason, what + "; " + hint
}
