package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// RetryPolicy bounds the retries of a call that failed transiently
// (PROTOCOL.md: 408, 425, 429, 5xx, connection errors, timeouts).
// Backoff starts at initialBackoff, doubles on each attempt up to maxBackoff,
// and is jittered; a Retry-After from the participant is honoured.
// +kubebuilder:validation:XValidation:rule="!has(self.initialBackoff) || !has(self.maxBackoff) || duration(self.initialBackoff) <= duration(self.maxBackoff)",message="initialBackoff must not exceed maxBackoff"
type RetryPolicy struct {
	// maxAttempts is the number of calls made before the outcome is decided
	// without a definitive answer. Forward calls default to 5; compensating
	// calls default to unlimited (bounded by maxDuration).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxAttempts *int32 `json:"maxAttempts,omitempty"`

	// initialBackoff is the wait before the second attempt (default 200ms).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="initialBackoff must be positive"
	InitialBackoff *metav1.Duration `json:"initialBackoff,omitempty"`

	// maxBackoff caps the doubling backoff (default 30s).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="maxBackoff must be positive"
	MaxBackoff *metav1.Duration `json:"maxBackoff,omitempty"`

	// maxDuration is how long a step may keep trying in one direction,
	// counted from its first attempt; 202 answers count against it too.
	// Forward calls default to maxAttempts times the call timeout;
	// compensating calls default to 24h.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="maxDuration must be positive"
	MaxDuration *metav1.Duration `json:"maxDuration,omitempty"`
}
