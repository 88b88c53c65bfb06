package saga

import (
	"math"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// Defaults of the call settings (DESIGN.md, "API contract").
const (
	// DefaultTimeout bounds each call when neither the Participant nor the step sets one.
	DefaultTimeout = 10 * time.Second
	// DefaultMaxAttempts is the forward calls' attempt limit.
	DefaultMaxAttempts int32 = 5
	// DefaultInitialBackoff is the wait before the second attempt.
	DefaultInitialBackoff = 200 * time.Millisecond
	// DefaultMaxBackoff caps the doubling backoff.
	DefaultMaxBackoff = 30 * time.Second
	// DefaultCompensationMaxDuration bounds a compensating call's retries.
	DefaultCompensationMaxDuration = 24 * time.Hour
	// DefaultAcceptedRetryAfter is the polling interval after a 202 without a hint.
	DefaultAcceptedRetryAfter = time.Second
)

// DefaultForwardPolicy is the policy of a forward call when nothing
// overrides it: 5 attempts, 200ms doubling to 30s, 10s per call and
// maxDuration = maxAttempts * timeout (50s).
func DefaultForwardPolicy() Policy {
	return Policy{
		Timeout:        DefaultTimeout,
		MaxAttempts:    DefaultMaxAttempts,
		InitialBackoff: DefaultInitialBackoff,
		MaxBackoff:     DefaultMaxBackoff,
		MaxDuration:    time.Duration(DefaultMaxAttempts) * DefaultTimeout,
	}
}

// DefaultCompensatePolicy is the policy of a compensating call when nothing
// overrides it: unlimited attempts within 24h, the same backoff and timeout
// as forward calls.
func DefaultCompensatePolicy() Policy {
	return Policy{
		Timeout:        DefaultTimeout,
		MaxAttempts:    0,
		InitialBackoff: DefaultInitialBackoff,
		MaxBackoff:     DefaultMaxBackoff,
		MaxDuration:    DefaultCompensationMaxDuration,
	}
}

// DefaultPolicies are the policies of a step whose Participant and step set
// nothing.
func DefaultPolicies() StepPolicies {
	return StepPolicies{Forward: DefaultForwardPolicy(), Compensate: DefaultCompensatePolicy()}
}

// ResolvePolicy returns base with every field that r sets replaced by r's
// value (field by field; nil fields and non-positive durations keep base's).
// It does not derive MaxDuration from MaxAttempts: Policies does that.
func ResolvePolicy(base Policy, r *sagav1.RetryPolicy) Policy {
	if r == nil {
		return base
	}
	if r.MaxAttempts != nil {
		base.MaxAttempts = *r.MaxAttempts
	}
	if d, ok := positive(r.InitialBackoff); ok {
		base.InitialBackoff = d
	}
	if d, ok := positive(r.MaxBackoff); ok {
		base.MaxBackoff = d
	}
	if d, ok := positive(r.MaxDuration); ok {
		base.MaxDuration = d
	}
	return base
}

// Policies merges a Participant's defaults (spec.timeout, spec.retry) with a
// step's own settings, field by field.
//
// Forward: timeout = step.timeout, else the Participant's, else 10s; each
// retry field = step.retry's, else the Participant's retry's, else the
// default (5 attempts, 200ms, 30s); maxDuration, when neither sets it, is
// maxAttempts * timeout.
//
// Compensate: same timeout; initialBackoff and maxBackoff = step.compensationRetry's,
// else the Participant's retry's, else the defaults; maxAttempts and
// maxDuration come from step.compensationRetry only (the Participant's
// retry is documented as the forward steps' policy), else unlimited and 24h.
//
// Both results are normalized (see Policy.Normalize).
func Policies(participantTimeout *metav1.Duration, participantRetry *sagav1.RetryPolicy, step sagav1.Step) StepPolicies {
	timeout := DefaultTimeout
	if d, ok := positive(participantTimeout); ok {
		timeout = d
	}
	if d, ok := positive(step.Timeout); ok {
		timeout = d
	}

	fwd := DefaultForwardPolicy()
	fwd.Timeout = timeout
	fwd.MaxDuration = 0
	fwd = ResolvePolicy(fwd, participantRetry)
	fwd = ResolvePolicy(fwd, step.Retry)
	if fwd.MaxDuration == 0 && fwd.MaxAttempts > 0 {
		fwd.MaxDuration = saturatingMul(time.Duration(fwd.MaxAttempts), fwd.Timeout)
	}

	comp := DefaultCompensatePolicy()
	comp.Timeout = timeout
	if participantRetry != nil {
		comp = ResolvePolicy(comp, &sagav1.RetryPolicy{
			InitialBackoff: participantRetry.InitialBackoff,
			MaxBackoff:     participantRetry.MaxBackoff,
		})
	}
	comp = ResolvePolicy(comp, step.CompensationRetry)

	return StepPolicies{Forward: fwd.Normalize(), Compensate: comp.Normalize()}
}

// Normalize fills unset or invalid fields: a non-positive timeout or
// backoff takes the default, a negative MaxAttempts or MaxDuration means
// unlimited (0), and MaxBackoff is raised to InitialBackoff when it is
// smaller (a Participant's maxBackoff can be below a step's initialBackoff
// after merging).
func (p Policy) Normalize() Policy {
	if p.Timeout <= 0 {
		p.Timeout = DefaultTimeout
	}
	if p.MaxAttempts < 0 {
		p.MaxAttempts = 0
	}
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = DefaultInitialBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = DefaultMaxBackoff
	}
	if p.MaxBackoff < p.InitialBackoff {
		p.MaxBackoff = p.InitialBackoff
	}
	if p.MaxDuration < 0 {
		p.MaxDuration = 0
	}
	return p
}

// Backoff is the wait before retry number retry (1 for the wait after the
// first attempt failed): min(maxBackoff, initialBackoff*2^(retry-1)), spread
// by jitter over [d/2, 3d/2) and clamped to [initialBackoff, maxBackoff].
// jitter is a number in [0,1); 0.5 yields exactly d (no jitter).
func Backoff(p Policy, retry int32, jitter float64) time.Duration {
	p = p.Normalize()
	if retry < 1 {
		retry = 1
	}
	d := p.InitialBackoff
	for k := int32(1); k < retry && d < p.MaxBackoff; k++ {
		if d > p.MaxBackoff/2 {
			d = p.MaxBackoff
			break
		}
		d *= 2
	}
	if d > p.MaxBackoff {
		d = p.MaxBackoff
	}
	j := clampJitter(jitter)
	w := d/2 + time.Duration(j*float64(d))
	if w < p.InitialBackoff {
		w = p.InitialBackoff
	}
	if w > p.MaxBackoff {
		w = p.MaxBackoff
	}
	return w
}

func clampJitter(j float64) float64 {
	switch {
	case math.IsNaN(j) || j < 0:
		return 0
	case j >= 1:
		return math.Nextafter(1, 0)
	}
	return j
}

func positive(d *metav1.Duration) (time.Duration, bool) {
	if d == nil || d.Duration <= 0 {
		return 0, false
	}
	return d.Duration, true
}

func saturatingMul(n, d time.Duration) time.Duration {
	if n <= 0 || d <= 0 {
		return 0
	}
	if d > time.Duration(math.MaxInt64)/n {
		return time.Duration(math.MaxInt64)
	}
	return n * d
}
