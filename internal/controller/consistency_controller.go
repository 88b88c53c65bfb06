package controller

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
	"github.com/sagaops/saga-operator/internal/participants"
	"github.com/sagaops/saga-operator/internal/saga"
)

// Defaults of spec.consistency and of the checker.
const (
	// DefaultCheckAfter is the wait between a saga's end and its first check.
	DefaultCheckAfter = 30 * time.Second
	// DefaultCheckInterval is the time between later checks.
	DefaultCheckInterval = 10 * time.Minute
	// UnreachableBackoff is the first wait before asking again after a
	// participant could not be asked; it doubles on each failed check up to
	// the saga's interval (at least this long; DefaultCheckInterval when the
	// interval is 0).
	UnreachableBackoff = 5 * time.Second
)

// ConsistencyReconciler is the consistency checker: after a saga has ended
// it asks each participant the saga's steps name for its state
// (PROTOCOL.md, "Consistency query"), lets saga.CheckConsistency compare
// it with the saga's log, and records the verdict as the Consistent
// condition, status.lastConsistencyCheck and status.consistencyViolations,
// with one status write per check. A violation found for the first time
// gets a Warning Event and counts in saga_consistency_violations_total;
// with spec.consistency.repair Redrive the missing calls are re-sent with
// their original idempotency keys and the participants asked again.
//
// Checks run at status.completionTime + checkAfter, then every interval
// (0: once). A participant that cannot be asked makes the condition Unknown
// and is asked again with an in-memory per-saga exponential backoff
// (UnreachableBackoff doubling, capped at the interval); those retries
// write nothing while the verdict stays the same. Every request the checker
// sends to participants waits on one shared rate limiter.
type ConsistencyReconciler struct {
	client.Client
	// APIReader reads from the API server directly: Secrets (never cached)
	// for participant tokens, and the live saga when a status write conflicts.
	APIReader    client.Reader
	Recorder     events.EventRecorder
	Participants *participants.Client
	Metrics      *Metrics
	// Limiter paces every request to participants (state queries and
	// re-sent calls) across all workers; nil means no limit.
	Limiter *rate.Limiter
	// MaxConcurrentReconciles is the number of sagas checked at once (default 4).
	MaxConcurrentReconciles int
	// Now is the clock; tests may set it.
	Now func() time.Time

	// sagas holds the in-memory state of each saga, by "namespace/name".
	// A saga is reconciled by one worker at a time, so its checkState is
	// only touched under mu for the map itself.
	mu    sync.Mutex
	sagas map[string]*checkState
	// drain empties the limiter's bucket once, at the first request.
	drain sync.Once
}

// NewConsistencyLimiter is the checker's shared rate limiter: qps
// requests per second (no limit when qps <= 0) with a burst of burst
// (at least 1), so that in any second at most qps + burst requests leave.
func NewConsistencyLimiter(qps float64, burst int) *rate.Limiter {
	if qps <= 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	return rate.NewLimiter(rate.Limit(qps), max(burst, 1))
}

// checkState is what the checker remembers of one saga between checks.
type checkState struct {
	// checked is when this process last recorded a check (the status keeps
	// whole seconds only, and the cache may lag behind our write).
	checked time.Time
	// failures counts consecutive checks that found a participant unreachable.
	failures int
	// retryAt is when to ask again after an unreachable participant.
	retryAt time.Time
}

// +kubebuilder:rbac:groups=saga.sagaops.io,resources=ordersagas,verbs=get;list;watch
// +kubebuilder:rbac:groups=saga.sagaops.io,resources=ordersagas/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=saga.sagaops.io,resources=participants,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile checks one ended saga when its check is due.
func (r *ConsistencyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	key := req.String()
	obj := &sagav1.OrderSaga{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(key)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !obj.Status.Phase.Terminal() || !obj.DeletionTimestamp.IsZero() {
		r.forget(key)
		return ctrl.Result{}, nil
	}
	now := r.now()
	st := r.state(key)
	due, ok := r.due(obj, st)
	if !ok {
		return ctrl.Result{}, nil
	}
	if wait := due.Sub(now); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}

	answers, err := r.ask(ctx, obj, nil)
	if err != nil {
		return ctrl.Result{}, err
	}
	v := saga.CheckConsistency(&obj.Spec, &obj.Status, answers)
	if v.Status == metav1.ConditionFalse && len(v.Redrive) > 0 && repairOf(obj) == sagav1.RepairRedrive {
		if err := r.redrive(ctx, obj, v.Redrive); err != nil {
			return ctrl.Result{}, err
		}
		again, err := r.ask(ctx, obj, participantsOf(v.Redrive))
		if err != nil {
			return ctrl.Result{}, err
		}
		for step, a := range again {
			answers[step] = a
		}
		v = saga.AfterRedrive(v, saga.CheckConsistency(&obj.Spec, &obj.Status, answers))
	}
	r.Metrics.ConsistencyChecks.WithLabelValues(v.Reason).Inc()
	now = r.now()

	unreachable := v.Reason == sagav1.ReasonParticipantUnreachable
	failures, retryAt := 0, time.Time{}
	if unreachable {
		failures = st.failures + 1
		retryAt = now.Add(r.backoff(obj, failures))
		if !changes(obj, v, now) {
			// The same verdict again: nothing to write until it changes.
			st.failures, st.retryAt = failures, retryAt
			log.V(1).Info("participant still unreachable", "failures", failures, "retryAt", retryAt)
			return ctrl.Result{RequeueAfter: retryAt.Sub(now)}, nil
		}
	}
	phase := obj.Status.Phase
	fresh := saga.NewViolations(&obj.Status, v)
	transitions := saga.RecordCheck(&obj.Status, obj.Generation, now, v)
	err = r.Status().Update(ctx, obj)
	if apierrors.IsConflict(err) {
		// Someone wrote the saga meanwhile, typically the saga reconciler
		// recording the new generation of the spec change that made this
		// check due. The participants' answers are seconds old: record
		// them on the live copy once rather than ask (and redrive) again.
		obj = &sagav1.OrderSaga{}
		if err = r.APIReader.Get(ctx, req.NamespacedName, obj); err == nil {
			if obj.Status.Phase != phase || !obj.DeletionTimestamp.IsZero() {
				return ctrl.Result{RequeueAfter: time.Millisecond}, nil
			}
			fresh = saga.NewViolations(&obj.Status, v)
			transitions = saga.RecordCheck(&obj.Status, obj.Generation, now, v)
			err = r.Status().Update(ctx, obj)
		}
	}
	switch {
	case apierrors.IsNotFound(err):
		r.forget(key)
		return ctrl.Result{}, nil
	case apierrors.IsConflict(err):
		return ctrl.Result{RequeueAfter: time.Millisecond}, nil
	case err != nil:
		return ctrl.Result{}, err
	}
	st.checked, st.failures, st.retryAt = now, failures, retryAt
	if len(transitions) > 0 {
		log.Info("consistency changed", "consistent", v.Status, "reason", v.Reason, "violations", obj.Status.ConsistencyViolations)
	}
	r.emit(obj, fresh, transitions)
	r.Metrics.ObserveInconsistent(key, len(obj.Status.ConsistencyViolations) > 0)

	next, ok := r.due(obj, st)
	if !ok {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: max(next.Sub(r.now()), time.Millisecond)}, nil
}

// due is when the saga's next check is due; false when no check is left
// (interval 0 and a conclusive check made).
func (r *ConsistencyReconciler) due(obj *sagav1.OrderSaga, st *checkState) (time.Time, bool) {
	if !st.retryAt.IsZero() {
		return st.retryAt, true
	}
	checkAfter, interval := consistencySettings(obj)
	lastTime := st.checked
	if last := obj.Status.LastConsistencyCheck; last != nil && last.After(lastTime) {
		lastTime = last.Time
	}
	end := obj.CreationTimestamp.Time
	if obj.Status.CompletionTime != nil {
		end = obj.Status.CompletionTime.Time
	}
	if lastTime.IsZero() || lastTime.Before(end) {
		// Not checked since the saga ended (a Failed saga re-driven by the
		// retry annotation ends again, later).
		return end.Add(checkAfter), true
	}
	if c := meta.FindStatusCondition(obj.Status.Conditions, sagav1.ConsistentCondition); c != nil {
		switch {
		case c.ObservedGeneration != obj.Generation:
			// spec.consistency changed (say, repair set to Redrive): check now.
			return time.Time{}, true
		case c.Reason == sagav1.ReasonParticipantUnreachable:
			// Left unreachable by an earlier process: retry soon.
			return lastTime.Add(UnreachableBackoff), true
		}
	}
	if interval <= 0 {
		return time.Time{}, false
	}
	return lastTime.Add(interval), true
}

// backoff is the wait after the n-th consecutive check that found a
// participant unreachable.
func (r *ConsistencyReconciler) backoff(obj *sagav1.OrderSaga, n int) time.Duration {
	_, interval := consistencySettings(obj)
	if interval <= 0 {
		interval = DefaultCheckInterval
	}
	limit := max(interval, UnreachableBackoff)
	d := UnreachableBackoff
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

func consistencySettings(obj *sagav1.OrderSaga) (checkAfter, interval time.Duration) {
	checkAfter, interval = DefaultCheckAfter, DefaultCheckInterval
	if c := obj.Spec.Consistency; c != nil {
		if c.CheckAfter != nil {
			checkAfter = c.CheckAfter.Duration
		}
		if c.Interval != nil {
			interval = c.Interval.Duration
		}
	}
	return checkAfter, interval
}

func repairOf(obj *sagav1.OrderSaga) sagav1.RepairPolicy {
	if obj.Spec.Consistency == nil {
		return sagav1.RepairNone
	}
	return obj.Spec.Consistency.Repair
}

// ask queries each participant the saga's steps name, once per
// participant (only those in only, when it is not nil), and returns the
// answers by step. A participant that cannot be resolved or asked answers
// Unreachable for its steps, one that answers 404 NotSupported; an error is
// returned only when the API server cannot be read or ctx ends.
func (r *ConsistencyReconciler) ask(ctx context.Context, obj *sagav1.OrderSaga, only map[string]bool) (map[string]saga.StepAnswer, error) {
	log := logf.FromContext(ctx)
	answers := make(map[string]saga.StepAnswer, len(obj.Spec.Steps))
	asked := map[string]bool{}
	for _, step := range obj.Spec.Steps {
		p := step.Participant
		if asked[p] || (only != nil && !only[p]) {
			continue
		}
		asked[p] = true
		var (
			states map[string]participants.StepState
			aerr   saga.AnswerError
		)
		_, ep, err := participants.Resolve(ctx, secretsFrom(r.Client, r.APIReader), obj.Namespace, p)
		switch {
		case errors.Is(err, participants.ErrParticipantNotFound), errors.Is(err, participants.ErrCredentialsNotFound):
			log.V(1).Info("participant cannot be asked", "participant", p, "reason", err.Error())
			aerr = saga.AnswerUnreachable
		case err != nil:
			return nil, err
		default:
			if err := r.wait(ctx); err != nil {
				return nil, err
			}
			states, err = r.Participants.State(ctx, ep, string(obj.UID))
			switch {
			case errors.Is(err, participants.ErrQueryNotSupported):
				aerr = saga.AnswerNotSupported
			case err != nil:
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				log.V(1).Info("participant state query failed", "participant", p, "reason", err.Error())
				aerr = saga.AnswerUnreachable
			}
		}
		for _, s := range obj.Spec.Steps {
			if s.Participant == p {
				answers[s.Name] = saga.StepAnswer{State: states[s.Name].State, Err: aerr}
			}
		}
	}
	return answers, nil
}

// redrive re-sends calls, in order, each with its original idempotency key
// (the client derives it from the saga's UID, the step and the direction).
// A call that fails is left for the next check to notice.
func (r *ConsistencyReconciler) redrive(ctx context.Context, obj *sagav1.OrderSaga, calls []saga.Call) error {
	log := logf.FromContext(ctx)
	for i := range calls {
		c := &calls[i]
		p, ep, err := participants.Resolve(ctx, secretsFrom(r.Client, r.APIReader), obj.Namespace, c.Participant)
		switch {
		case errors.Is(err, participants.ErrParticipantNotFound), errors.Is(err, participants.ErrCredentialsNotFound):
			log.Info("cannot re-send call", "step", c.Step, "direction", c.Direction, "reason", err.Error())
			continue
		case err != nil:
			return err
		}
		pol := saga.DefaultPolicies()
		for _, s := range obj.Spec.Steps {
			if s.Name == c.Step {
				pol = saga.Policies(p.Spec.Timeout, p.Spec.Retry, s)
			}
		}
		if err := r.wait(ctx); err != nil {
			return err
		}
		res := send(ctx, r.Participants, r.Metrics, obj, ep, pol, c)
		log.Info("re-sent call with its original idempotency key", "step", c.Step, "direction", c.Direction, "outcome", res.Outcome)
	}
	return nil
}

func participantsOf(calls []saga.Call) map[string]bool {
	out := map[string]bool{}
	for _, c := range calls {
		out[c.Participant] = true
	}
	return out
}

// emit records the check's Events and counts its new violations.
func (r *ConsistencyReconciler) emit(obj *sagav1.OrderSaga, fresh []saga.Violation, ts []saga.Transition) {
	for _, t := range ts {
		typ := corev1.EventTypeNormal
		if t.Warning {
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(obj, nil, typ, t.Reason, "ConsistencyCheck", "%s", t.Message)
	}
	for _, x := range fresh {
		r.Metrics.ConsistencyViolations.WithLabelValues(obj.Namespace, x.Participant, x.Step, x.Kind).Inc()
	}
}

// changes reports whether recording v would change the saga's status
// beyond lastConsistencyCheck.
func changes(obj *sagav1.OrderSaga, v saga.Verdict, now time.Time) bool {
	after := obj.Status.DeepCopy()
	saga.RecordCheck(after, obj.Generation, now, v)
	after.LastConsistencyCheck = obj.Status.LastConsistencyCheck
	return !equality.Semantic.DeepEqual(&obj.Status, after)
}

// wait blocks until the shared limiter lets one request leave now.
//
// It takes the token at the moment the request leaves rather than using
// Limiter.Wait, which reserves a future token and sleeps until then: when
// the process stalls (CPU starved, a GC pause), every overdue reservation
// fires at once and the participant sees them bunched, above the limit.
// Taking the token after waking keeps what a participant receives in any
// second within qps + burst, up to the few requests already on the wire.
//
// The bucket is emptied at the first request: a checker starts (after a
// restart or a leader change) with every overdue check due at once, and
// that herd is paced from its first request instead of starting with a
// burst.
func (r *ConsistencyReconciler) wait(ctx context.Context) error {
	lim := r.Limiter
	if lim == nil {
		return nil
	}
	r.drain.Do(func() { lim.AllowN(time.Now(), lim.Burst()) })
	for !lim.Allow() {
		missing := 1 - lim.Tokens()
		d := time.Millisecond
		if l := float64(lim.Limit()); l > 0 {
			d = max(d, time.Duration(missing/l*float64(time.Second)))
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// state returns the saga's in-memory check state, created on first use.
func (r *ConsistencyReconciler) state(key string) *checkState {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sagas == nil {
		r.sagas = map[string]*checkState{}
	}
	st, ok := r.sagas[key]
	if !ok {
		st = &checkState{}
		r.sagas[key] = st
	}
	return st
}

// forget drops what the checker remembers of a saga that is gone or no
// longer ended.
func (r *ConsistencyReconciler) forget(key string) {
	r.mu.Lock()
	delete(r.sagas, key)
	r.mu.Unlock()
	r.Metrics.ObserveInconsistent(key, false)
}

func (r *ConsistencyReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// endedSagas passes the sagas the checker cares about: ended ones when
// they are created (or seen at start), when they end, and when their spec
// (generation) or annotations change; deletions, so their state is
// forgotten. The checker's own status writes do not pass.
func endedSagas() predicate.Predicate {
	ended := func(o client.Object) bool {
		s, ok := o.(*sagav1.OrderSaga)
		return ok && s.Status.Phase.Terminal()
	}
	return predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return ended(e.Object) },
		DeleteFunc:  func(event.DeleteEvent) bool { return true },
		GenericFunc: func(e event.GenericEvent) bool { return ended(e.Object) },
		UpdateFunc: func(e event.UpdateEvent) bool {
			if !ended(e.ObjectNew) {
				return false
			}
			return !ended(e.ObjectOld) ||
				e.ObjectNew.GetGeneration() != e.ObjectOld.GetGeneration() ||
				!equality.Semantic.DeepEqual(e.ObjectNew.GetAnnotations(), e.ObjectOld.GetAnnotations())
		},
	}
}

// SetupWithManager registers the checker as the controller "consistency".
func (r *ConsistencyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Metrics == nil {
		r.Metrics = DefaultMetrics()
	}
	workers := r.MaxConcurrentReconciles
	if workers <= 0 {
		workers = 4
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&sagav1.OrderSaga{}, builder.WithPredicates(endedSagas())).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Named("consistency").
		Complete(r)
}
