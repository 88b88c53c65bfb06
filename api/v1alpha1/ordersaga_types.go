package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// OrderSagaSpec is what the user asks for: an order and the steps that carry
// it out across participant services.
type OrderSagaSpec struct {
	// order is the business payload sent to every participant. It is
	// immutable once the saga is created.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.order is immutable once the saga is created"
	Order Order `json:"order"`

	// steps run in order, one at a time; when one fails, the completed
	// steps are compensated in reverse. 1..32 steps with unique names;
	// immutable once the saga is created.
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.steps is immutable once the saga is created"
	Steps []Step `json:"steps"`

	// deadline bounds the forward run, counted from status.startTime: past
	// it no forward step starts and the saga compensates.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="deadline must be positive"
	Deadline *metav1.Duration `json:"deadline,omitempty"`

	// suspend, when true, starts no new call until it is false again. A call
	// already in flight finishes and is recorded.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// cancel, when true on a running saga, compensates what is done and ends
	// the saga Compensated. It has no effect on a saga that has ended.
	// +optional
	Cancel bool `json:"cancel,omitempty"`

	// deletionPolicy says what deleting an unfinished saga does: Compensate
	// (default) undoes the completed steps before the object goes away;
	// Orphan removes it at once and leaves the participants as they are.
	// +optional
	// +kubebuilder:default=Compensate
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`

	// ttlSecondsAfterFinished deletes the object this many seconds after the
	// saga ends (Succeeded, Compensated or Failed). Unset keeps it.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=31536000
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`

	// consistency configures the checks made after the saga ends.
	// +optional
	Consistency *ConsistencySpec `json:"consistency,omitempty"`
}

// DeletionPolicy says what deleting an unfinished saga does.
// +kubebuilder:validation:Enum=Compensate;Orphan
type DeletionPolicy string

const (
	// DeletionPolicyCompensate compensates the completed steps before the object is removed.
	DeletionPolicyCompensate DeletionPolicy = "Compensate"
	// DeletionPolicyOrphan removes the object at once.
	DeletionPolicyOrphan DeletionPolicy = "Orphan"
)

// Order is the business payload of a saga.
type Order struct {
	// orderId identifies the order at the participants.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9._:-]*$`
	OrderID string `json:"orderId"`

	// userId identifies the buyer.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9._:@-]*$`
	UserID string `json:"userId"`

	// currency is an ISO 4217 code: three capital letters.
	// +required
	// +kubebuilder:validation:Pattern=`^[A-Z]{3}$`
	Currency string `json:"currency"`

	// items are the order lines, 1..100.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=100
	Items []OrderItem `json:"items"`
}

// OrderItem is one order line.
type OrderItem struct {
	// sku identifies the article.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	SKU string `json:"sku"`

	// quantity is the number of units, at least 1.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	Quantity int32 `json:"quantity"`

	// unitPriceCents is the price of one unit in the currency's minor unit,
	// 0..10^10, so that the order's total (100 items of up to 10^6 units)
	// fits in an int64.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000000000
	UnitPriceCents int64 `json:"unitPriceCents"`
}

// TotalCents is the sum of quantity times unit price over the items.
func (o Order) TotalCents() int64 {
	var total int64
	for _, it := range o.Items {
		total += int64(it.Quantity) * it.UnitPriceCents
	}
	return total
}

// Step is one call to a participant and, optionally, the call that undoes it.
type Step struct {
	// name identifies the step in the saga (a DNS label). It is part of the
	// idempotency key.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// participant names the Participant object, in the saga's namespace,
	// that serves this step.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Participant string `json:"participant"`

	// action is the forward action called on the participant.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Action string `json:"action"`

	// compensation is the action that undoes action. A step without one is a
	// pivot: once it has succeeded, later steps are never compensated but
	// retried until they succeed (forward recovery).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Compensation string `json:"compensation,omitempty"`

	// timeout bounds each call of this step; it overrides the Participant's timeout.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="timeout must be positive"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// retry overrides, field by field, the Participant's retry policy for
	// the forward call.
	// +optional
	Retry *RetryPolicy `json:"retry,omitempty"`

	// compensationRetry bounds the compensating call's retries: by default
	// unlimited attempts within 24h.
	// +optional
	CompensationRetry *RetryPolicy `json:"compensationRetry,omitempty"`
}

// ConsistencySpec configures the checks made after the saga ends.
type ConsistencySpec struct {
	// checkAfter is how long after the saga ends the first check runs (default 30s).
	// +optional
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	CheckAfter *metav1.Duration `json:"checkAfter,omitempty"`

	// interval is the time between later checks (default 10m); 0 checks only once.
	// +optional
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	Interval *metav1.Duration `json:"interval,omitempty"`

	// repair says what a violation triggers: None reports it; Redrive
	// re-sends the missing call with its original idempotency key.
	// +optional
	// +kubebuilder:default=None
	Repair RepairPolicy `json:"repair,omitempty"`
}

// RepairPolicy says what the consistency checker does about a violation.
// +kubebuilder:validation:Enum=None;Redrive
type RepairPolicy string

const (
	// RepairNone only reports violations.
	RepairNone RepairPolicy = "None"
	// RepairRedrive re-sends the missing call with its original idempotency key.
	RepairRedrive RepairPolicy = "Redrive"
)

// SagaPhase is where a saga is in its life.
// +kubebuilder:validation:Enum=Pending;Running;Compensating;Succeeded;Compensated;Failed
type SagaPhase string

const (
	// SagaPending: accepted, no call made yet.
	SagaPending SagaPhase = "Pending"
	// SagaRunning: forward steps are being called.
	SagaRunning SagaPhase = "Running"
	// SagaCompensating: completed steps are being undone in reverse.
	SagaCompensating SagaPhase = "Compensating"
	// SagaSucceeded: every step succeeded.
	SagaSucceeded SagaPhase = "Succeeded"
	// SagaCompensated: the saga was rolled back; no effect remains.
	SagaCompensated SagaPhase = "Compensated"
	// SagaFailed: the saga stopped and needs a person (the dead letter).
	SagaFailed SagaPhase = "Failed"
)

// Terminal reports whether the phase is an end state.
func (p SagaPhase) Terminal() bool {
	return p == SagaSucceeded || p == SagaCompensated || p == SagaFailed
}

// StepPhase is where one step is.
// +kubebuilder:validation:Enum=Pending;Running;Succeeded;Failed;Unknown;Compensating;Compensated;CompensationFailed;Skipped
type StepPhase string

const (
	StepPending            StepPhase = "Pending"
	StepRunning            StepPhase = "Running"
	StepSucceeded          StepPhase = "Succeeded"
	StepFailed             StepPhase = "Failed"
	StepUnknown            StepPhase = "Unknown"
	StepCompensating       StepPhase = "Compensating"
	StepCompensated        StepPhase = "Compensated"
	StepCompensationFailed StepPhase = "CompensationFailed"
	StepSkipped            StepPhase = "Skipped"
)

// Direction of a call.
// +kubebuilder:validation:Enum=forward;compensate
type Direction string

const (
	// Forward calls the step's action.
	Forward Direction = "forward"
	// Compensate calls the step's compensation.
	Compensate Direction = "compensate"
)

// OrderSagaStatus is the saga log: everything needed to resume after a crash.
type OrderSagaStatus struct {
	// observedGeneration is the generation last acted upon.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase is where the saga is.
	// +optional
	Phase SagaPhase `json:"phase,omitempty"`

	// currentStep is the step being called (forward or compensating).
	// +optional
	CurrentStep string `json:"currentStep,omitempty"`

	// attempts is the number of calls made so far for currentStep in its
	// current direction.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// startTime is when the first call was made.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the saga reached Succeeded, Compensated or Failed.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// compensationReason says why the saga compensates: StepRejected,
	// StepUnknown, DeadlineExceeded, Cancelled or Deleted.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	CompensationReason string `json:"compensationReason,omitempty"`

	// observedRetry is the last value of the saga.sagaops.io/retry annotation
	// acted upon.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	ObservedRetry string `json:"observedRetry,omitempty"`

	// steps records each step, in spec order.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	Steps []StepStatus `json:"steps,omitempty"`

	// history holds the last 32 transitions, oldest first.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	History []HistoryEntry `json:"history,omitempty"`

	// lastConsistencyCheck is when the participants were last asked whether
	// they agree with the outcome.
	// +optional
	LastConsistencyCheck *metav1.Time `json:"lastConsistencyCheck,omitempty"`

	// consistencyViolations names, in spec order, the steps whose
	// participant disagreed with the saga's outcome at the last check (the
	// Consistent condition's message says how). A step stays listed while
	// its participant cannot be asked. A Warning Event is emitted when a
	// step enters the list, so a violation that persists over later checks
	// is reported once; a Normal Event when the list empties.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=63
	ConsistencyViolations []string `json:"consistencyViolations,omitempty"`

	// conditions: Ready, Reconciling, Stalled (kstatus) and Consistent.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// StepStatus is the record of one step.
type StepStatus struct {
	// name is the step's name in spec.steps.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// phase is where the step is.
	// +optional
	Phase StepPhase `json:"phase,omitempty"`

	// attempts counts the forward calls made.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// compensationAttempts counts the compensating calls made.
	// +optional
	CompensationAttempts int32 `json:"compensationAttempts,omitempty"`

	// startTime is when the first forward call was made.
	// +optional
	StartTime *metav1.MicroTime `json:"startTime,omitempty"`

	// completionTime is when the step reached its last phase so far.
	// +optional
	CompletionTime *metav1.MicroTime `json:"completionTime,omitempty"`

	// compensationStartTime is when the first compensating call was made.
	// +optional
	CompensationStartTime *metav1.MicroTime `json:"compensationStartTime,omitempty"`

	// nextAttemptTime is when the next call may be made, while waiting to
	// retry. Step times carry microseconds so sub-second backoffs survive a
	// restart.
	// +optional
	NextAttemptTime *metav1.MicroTime `json:"nextAttemptTime,omitempty"`

	// outputs are what the forward call returned (at most 16 keys of up to
	// 63 characters, values up to 256 bytes).
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	Outputs map[string]string `json:"outputs,omitempty"`

	// lastError is the last failure of a call of this step.
	// +optional
	LastError *StepError `json:"lastError,omitempty"`
}

// StepError describes a failed call.
type StepError struct {
	// code is the participant's error code, or one of the operator's
	// (Timeout, ConnectionError, InvalidResponse, InvalidOutputs, HTTP<status>).
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Code string `json:"code,omitempty"`

	// message is a human-readable description, truncated to 512 bytes.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// httpStatus is the status code of the answer, when there was one.
	// +optional
	HTTPStatus int32 `json:"httpStatus,omitempty"`
}

// HistoryEntry is one transition of the saga log.
type HistoryEntry struct {
	// time is when the transition happened.
	// +required
	Time metav1.Time `json:"time"`

	// step is the step concerned; empty for saga-level transitions.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Step string `json:"step,omitempty"`

	// direction of the call, when there was one.
	// +optional
	Direction Direction `json:"direction,omitempty"`

	// attempt is the attempt number of the call.
	// +optional
	Attempt int32 `json:"attempt,omitempty"`

	// outcome is the phase reached, for example Succeeded, Retrying or Compensated.
	// +required
	// +kubebuilder:validation:MaxLength=64
	Outcome string `json:"outcome"`

	// message is a short description, truncated to 256 bytes.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Message string `json:"message,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=osaga;osagas,categories=sagas
// +kubebuilder:printcolumn:name="Order",type=string,JSONPath=`.spec.order.orderId`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Step",type=string,JSONPath=`.status.currentStep`
// +kubebuilder:printcolumn:name="Attempts",type=integer,JSONPath=`.status.attempts`
// +kubebuilder:printcolumn:name="Consistent",type=string,JSONPath=`.status.conditions[?(@.type=="Consistent")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// OrderSaga runs an order as a distributed transaction across participant
// services, compensating the completed steps in reverse when one fails.
type OrderSaga struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the order and the steps that carry it out.
	// +required
	Spec OrderSagaSpec `json:"spec"`

	// status is the saga log.
	// +optional
	Status OrderSagaStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// OrderSagaList contains a list of OrderSaga.
type OrderSagaList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []OrderSaga `json:"items"`
}

func init() {
	SchemeBuilder.Register(&OrderSaga{}, &OrderSagaList{})
}
