package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ParticipantSpec says where a participant service is and how to call it.
type ParticipantSpec struct {
	// url is the service's base URL: http or https, with a host and no user
	// info. Calls go to {url}/saga/v1/... (PROTOCOL.md).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self)",message="url must be an absolute URL"
	// +kubebuilder:validation:XValidation:rule="!isURL(self) || url(self).getScheme() in ['http', 'https']",message="url scheme must be http or https"
	// +kubebuilder:validation:XValidation:rule="!isURL(self) || url(self).getHostname() != ''",message="url must have a host"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@')",message="url must not contain user info; use auth.bearerTokenSecretRef"
	URL string `json:"url"`

	// timeout bounds each call (default 10s).
	// +optional
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="timeout must be positive"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// retry is the default retry policy of every forward step on this
	// participant: maxAttempts 5, initialBackoff 200ms, maxBackoff 30s.
	// +optional
	Retry *RetryPolicy `json:"retry,omitempty"`

	// auth configures credentials sent with every call.
	// +optional
	Auth *ParticipantAuth `json:"auth,omitempty"`
}

// ParticipantAuth configures credentials.
type ParticipantAuth struct {
	// bearerTokenSecretRef names a key of a Secret in the Participant's
	// namespace whose value is sent as "Authorization: Bearer <value>".
	// +optional
	BearerTokenSecretRef *SecretKeySelector `json:"bearerTokenSecretRef,omitempty"`
}

// SecretKeySelector names one key of a Secret in the same namespace.
type SecretKeySelector struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key in the Secret's data.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// ParticipantStatus reports the service's health.
type ParticipantStatus struct {
	// observedGeneration is the generation last probed.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// lastProbeTime is when a /healthz probe last changed this status (the
	// probe runs on an interval; an unchanged answer is not written).
	// +optional
	LastProbeTime *metav1.Time `json:"lastProbeTime,omitempty"`

	// conditions: Ready is True when GET /healthz answers 200.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=sp,categories=sagas
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.spec.url`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// Participant is a service that takes part in sagas (PROTOCOL.md).
type Participant struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says where the service is and how to call it.
	// +required
	Spec ParticipantSpec `json:"spec"`

	// status reports the service's health.
	// +optional
	Status ParticipantStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ParticipantList contains a list of Participant.
type ParticipantList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Participant `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Participant{}, &ParticipantList{})
}
