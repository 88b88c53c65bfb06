package v1alpha1

// Names that the operator and users share.
const (
	// Finalizer keeps a saga until its completed steps are compensated on delete.
	Finalizer = "saga.sagaops.io/compensate-on-delete"
	// RetryAnnotation re-drives a Failed saga when set to a new value.
	RetryAnnotation = "saga.sagaops.io/retry"
)

// Condition types.
const (
	// ReadyCondition is True only when the saga Succeeded (for a Participant:
	// when /healthz answers 200).
	ReadyCondition = "Ready"
	// ReconcilingCondition is True while the saga is Running or Compensating.
	ReconcilingCondition = "Reconciling"
	// StalledCondition is True when a person must act.
	StalledCondition = "Stalled"
	// ConsistentCondition says whether the participants still agree with the
	// saga's outcome.
	ConsistentCondition = "Consistent"
)

// Condition reasons for sagas.
const (
	// ReasonPending: the saga has not made its first call yet.
	ReasonPending = "Pending"
	// ReasonProgressing: forward steps are running.
	ReasonProgressing = "Progressing"
	// ReasonRetrying: a step failed transiently and waits for its next attempt.
	ReasonRetrying = "Retrying"
	// ReasonCompensating: completed steps are being undone.
	ReasonCompensating = "Compensating"
	// ReasonSuspended: spec.suspend is true.
	ReasonSuspended = "Suspended"
	// ReasonSucceeded: every step succeeded.
	ReasonSucceeded = "Succeeded"
	// ReasonCompensated: the saga was rolled back.
	ReasonCompensated = "Compensated"
	// ReasonStepRejected: a forward step was definitively rejected.
	ReasonStepRejected = "StepRejected"
	// ReasonStepUnknown: a forward step ran out of attempts or time without a definitive answer.
	ReasonStepUnknown = "StepUnknown"
	// ReasonDeadlineExceeded: spec.deadline passed before every step succeeded.
	ReasonDeadlineExceeded = "DeadlineExceeded"
	// ReasonCancelled: spec.cancel was set.
	ReasonCancelled = "Cancelled"
	// ReasonDeleted: the saga is being deleted with deletionPolicy Compensate.
	ReasonDeleted = "Deleted"
	// ReasonCompensationFailed: a compensating call was refused or ran out of time.
	ReasonCompensationFailed = "CompensationFailed"
	// ReasonForwardRecoveryFailed: a step after a pivot was rejected.
	ReasonForwardRecoveryFailed = "ForwardRecoveryFailed"
	// ReasonParticipantNotFound: a step names a Participant that does not exist.
	ReasonParticipantNotFound = "ParticipantNotFound"
	// ReasonInvalidOutputs: a participant returned outputs over the protocol's limits.
	ReasonInvalidOutputs = "InvalidOutputs"
	// ReasonCredentialsNotFound: the Participant's token Secret or key is missing.
	ReasonCredentialsNotFound = "CredentialsNotFound"
)

// Condition reasons for the Consistent condition.
const (
	// ReasonCheckPending: the first check has not run yet.
	ReasonCheckPending = "CheckPending"
	// ReasonConsistent: every participant agrees with the outcome.
	ReasonConsistent = "Consistent"
	// ReasonStepNotApplied: a Succeeded saga has a step whose effect is not in place.
	ReasonStepNotApplied = "StepNotApplied"
	// ReasonStepNotCompensated: a Compensated saga has a step whose effect is still in place.
	ReasonStepNotCompensated = "StepNotCompensated"
	// ReasonParticipantUnreachable: a participant could not be asked.
	ReasonParticipantUnreachable = "ParticipantUnreachable"
	// ReasonQueryNotSupported: a participant does not implement the state query.
	ReasonQueryNotSupported = "QueryNotSupported"
	// ReasonRepairFailed: the participant still disagrees after a redrive.
	ReasonRepairFailed = "RepairFailed"
	// ReasonRepaired is the reason of the Normal Event emitted when a
	// redrive (spec.consistency.repair: Redrive) made the participants agree
	// again; the condition itself then reads Consistent.
	ReasonRepaired = "Repaired"
)

// Condition reasons for participants.
const (
	// ReasonHealthy: GET /healthz answered 200.
	ReasonHealthy = "Healthy"
	// ReasonUnhealthy: GET /healthz failed or answered another status.
	ReasonUnhealthy = "Unhealthy"
)
