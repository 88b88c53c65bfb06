// Package v1alpha1 contains the API types of the saga.sagaops.io group:
// OrderSaga, a distributed transaction run step by step across participant
// services, and Participant, one such service.
// +kubebuilder:object:generate=true
// +groupName=saga.sagaops.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version used to register these objects.
	GroupVersion = schema.GroupVersion{Group: "saga.sagaops.io", Version: "v1alpha1"}

	// SchemeBuilder adds the Go types to the GroupVersionKind scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types in this group-version to the given scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
