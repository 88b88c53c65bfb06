package participants

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// DefaultTimeout bounds a call when the Participant sets no timeout.
const DefaultTimeout = 10 * time.Second

var (
	// ErrParticipantNotFound: the Participant object does not exist. The
	// error Resolve returns also wraps the API server's NotFound, so
	// apierrors.IsNotFound holds too.
	ErrParticipantNotFound = errors.New("participant not found")
	// ErrCredentialsNotFound: the Participant names a token Secret, and the
	// Secret, its key or the key's value is missing.
	ErrCredentialsNotFound = errors.New("participant credentials not found")
)

// Endpoint is everything a call needs to know about a participant.
type Endpoint struct {
	// Name of the Participant object, for logs and metrics.
	Name string
	// URL is the participant's base URL (spec.url).
	URL string
	// Timeout bounds each call; 0 means DefaultTimeout.
	Timeout time.Duration
	// BearerToken is sent as "Authorization: Bearer <token>" when not empty.
	BearerToken string
}

// Resolve reads the Participant namespace/name and, when it names a token
// Secret, the token, and returns the Participant with the Endpoint to call.
//
// Errors: one wrapping ErrParticipantNotFound (and the API's NotFound) when
// the Participant does not exist; one wrapping ErrCredentialsNotFound when
// the Secret, the key or its value is missing (the Participant is returned
// with it); any other read error as it came.
//
// The token is the key's value with surrounding white space removed (a
// Secret made from a file usually ends in a newline). Reading Secrets through
// a cached client makes the manager watch Secrets; pass an uncached reader
// (mgr.GetAPIReader()) to avoid that.
func Resolve(ctx context.Context, c client.Reader, namespace, name string) (*sagav1.Participant, Endpoint, error) {
	p := &sagav1.Participant{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, p); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, Endpoint{}, fmt.Errorf("%w: %s/%s: %w", ErrParticipantNotFound, namespace, name, err)
		}
		return nil, Endpoint{}, fmt.Errorf("reading participant %s/%s: %w", namespace, name, err)
	}
	ep := Endpoint{Name: p.Name, URL: p.Spec.URL, Timeout: DefaultTimeout}
	if p.Spec.Timeout != nil && p.Spec.Timeout.Duration > 0 {
		ep.Timeout = p.Spec.Timeout.Duration
	}
	if p.Spec.Auth == nil || p.Spec.Auth.BearerTokenSecretRef == nil {
		return p, ep, nil
	}
	ref := p.Spec.Auth.BearerTokenSecretRef
	s := &corev1.Secret{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ref.Name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return p, ep, fmt.Errorf("%w: participant %s/%s: secret %q: %w", ErrCredentialsNotFound, namespace, name, ref.Name, err)
		}
		return p, ep, fmt.Errorf("reading secret %s/%s of participant %s: %w", namespace, ref.Name, name, err)
	}
	raw, ok := s.Data[ref.Key]
	if !ok {
		// StringData is write-only on a real API server, but a reader that
		// was handed an object built in memory may still carry it.
		if v, found := s.StringData[ref.Key]; found {
			raw, ok = []byte(v), true
		}
	}
	token := strings.TrimSpace(string(raw))
	if !ok || token == "" {
		return p, ep, fmt.Errorf("%w: participant %s/%s: secret %q has no value for key %q", ErrCredentialsNotFound, namespace, name, ref.Name, ref.Key)
	}
	if !validToken(token) {
		return p, ep, fmt.Errorf("%w: participant %s/%s: the value of key %q of secret %q cannot be sent in a header", ErrCredentialsNotFound, namespace, name, ref.Key, ref.Name)
	}
	ep.BearerToken = token
	return p, ep, nil
}

// validToken reports whether a token can be sent in an Authorization header:
// visible ASCII and spaces only.
func validToken(t string) bool {
	for i := 0; i < len(t); i++ {
		if c := t[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}
