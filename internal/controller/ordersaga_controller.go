package controller

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
	"github.com/sagaops/saga-operator/internal/participants"
	"github.com/sagaops/saga-operator/internal/saga"
)

// blockedRecheck is how often a saga blocked on a missing token Secret
// looks again (Secrets are not watched).
const blockedRecheck = 10 * time.Second

// participantIndex indexes OrderSagas by the Participants their steps name.
const participantIndex = "spec.steps.participant"

// OrderSagaReconciler runs sagas: it asks internal/saga what to do next,
// makes that call through internal/participants, and records the result in
// status with one optimistic write per call.
type OrderSagaReconciler struct {
	client.Client
	// APIReader reads from the API server directly: Secrets (never cached)
	// and sagas whose cached copy is older than our own last write.
	APIReader    client.Reader
	Scheme       *runtime.Scheme
	Recorder     events.EventRecorder
	Participants *participants.Client
	Metrics      *Metrics

	// MaxConcurrentReconciles bounds the sagas worked on at once; calls to
	// slow participants hold a worker, so it defaults high (64).
	MaxConcurrentReconciles int
	// MaxCallsPerReconcile bounds the calls made in one reconcile, each
	// persisted before the next (default 16).
	MaxCallsPerReconcile int
	// Now and Jitter are the clock and the backoff jitter; tests may set them.
	Now    func() time.Time
	Jitter func() float64

	// written remembers, per saga, the resourceVersion of our last status
	// write, so a reconcile that sees an older copy in the cache reads the
	// live object instead of repeating a call.
	written sync.Map
}

// +kubebuilder:rbac:groups=saga.sagaops.io,resources=ordersagas,verbs=get;list;watch;update;patch;delete
// +kubebuilder:rbac:groups=saga.sagaops.io,resources=ordersagas/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=saga.sagaops.io,resources=ordersagas/finalizers,verbs=update
// +kubebuilder:rbac:groups=saga.sagaops.io,resources=participants,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile moves one saga forward by up to MaxCallsPerReconcile calls.
func (r *OrderSagaReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	obj, err := r.get(ctx, req.NamespacedName)
	if err != nil || obj == nil {
		return ctrl.Result{}, err
	}
	key := req.String()
	r.Metrics.ObservePhase(key, observedPhase(obj))

	deleting := !obj.DeletionTimestamp.IsZero()
	if deleting {
		if !controllerutil.ContainsFinalizer(obj, sagav1.Finalizer) {
			return ctrl.Result{}, nil
		}
		if obj.Spec.DeletionPolicy == sagav1.DeletionPolicyOrphan || obj.Status.Phase.Terminal() {
			return ctrl.Result{}, r.release(ctx, obj)
		}
	}

	var (
		result      *saga.Result
		unavailable map[string]saga.Blocker
	)
	maxCalls := r.MaxCallsPerReconcile
	if maxCalls <= 0 {
		maxCalls = 16
	}
	policies, err := r.policies(ctx, obj)
	if err != nil {
		return ctrl.Result{}, err
	}
	for calls := 0; ; {
		d := saga.Decide(saga.Input{
			Spec:           &obj.Spec,
			Status:         &obj.Status,
			Generation:     obj.Generation,
			Now:            r.now(),
			Policies:       policies,
			Deleting:       deleting && obj.Spec.DeletionPolicy != sagav1.DeletionPolicyOrphan,
			Unavailable:    unavailable,
			RetryRequested: obj.Annotations[sagav1.RetryAnnotation],
			Result:         result,
			Jitter:         r.jitter,
		})
		result = nil
		if !equality.Semantic.DeepEqual(&obj.Status, d.Status) {
			before := obj.Status.DeepCopy()
			obj.Status = *d.Status
			if err := r.Status().Update(ctx, obj); err != nil {
				return requeueOnConflict(err)
			}
			r.written.Store(key, obj.ResourceVersion)
			r.emit(ctx, obj, before, d.Transitions)
			r.Metrics.ObservePhase(key, obj.Status.Phase)
		}

		switch d.Action.Kind {
		case saga.ActionCall:
			if calls >= maxCalls {
				// Yield the worker; the status already names the next call.
				return ctrl.Result{RequeueAfter: time.Millisecond}, nil
			}
			calls++
			if !deleting {
				if err := r.ensureFinalizer(ctx, obj); err != nil {
					return requeueOnConflict(err)
				}
			}
			res, blocker, err := r.call(ctx, obj, d.Action.Call, policies[d.Action.Call.Step])
			switch {
			case err != nil:
				return ctrl.Result{}, err
			case blocker != nil:
				// Nothing was sent: decide again with the participant blocked.
				if unavailable == nil {
					unavailable = map[string]saga.Blocker{}
				}
				unavailable[d.Action.Call.Participant] = *blocker
			}
			// A nil result (the Participant vanished, or is blocked) decides again.
			result = res
		case saga.ActionWait:
			return ctrl.Result{RequeueAfter: max(d.Action.Until.Sub(r.now()), time.Millisecond)}, nil
		case saga.ActionBlocked:
			// The Participant watch wakes the saga; Until is its deadline, if any.
			log.V(1).Info("waiting for participant", "participant", d.Action.Call.Participant, "step", d.Action.Call.Step)
			return ctrl.Result{RequeueAfter: r.blockedWait(d.Action)}, nil
		case saga.ActionSuspended:
			return ctrl.Result{}, nil
		case saga.ActionDone:
			if deleting {
				return ctrl.Result{}, r.release(ctx, obj)
			}
			return r.expire(ctx, obj)
		}
	}
}

// ensureFinalizer adds the finalizer, which must be on before the first
// participant call.
func (r *OrderSagaReconciler) ensureFinalizer(ctx context.Context, obj *sagav1.OrderSaga) error {
	if controllerutil.ContainsFinalizer(obj, sagav1.Finalizer) {
		return nil
	}
	patch := client.MergeFromWithOptions(obj.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.AddFinalizer(obj, sagav1.Finalizer)
	if err := r.Patch(ctx, obj, patch); err != nil {
		return err
	}
	r.written.Store(client.ObjectKeyFromObject(obj).String(), obj.ResourceVersion)
	return nil
}

// blockedWait is when a blocked saga looks again: never for a missing
// Participant (its watch wakes the saga), after blockedRecheck for a missing
// token Secret (Secrets are not watched), and no later than the deadline.
func (r *OrderSagaReconciler) blockedWait(a saga.Action) time.Duration {
	wait := time.Duration(0)
	if a.Blocker != nil {
		wait = blockedRecheck
	}
	if !a.Until.IsZero() {
		untilDeadline := max(a.Until.Sub(r.now()), time.Millisecond)
		if wait == 0 || untilDeadline < wait {
			wait = untilDeadline
		}
	}
	return wait
}

// get reads the saga from the cache, or from the API server when the cached
// copy is not the one we last wrote. It returns nil when the saga is gone.
func (r *OrderSagaReconciler) get(ctx context.Context, name types.NamespacedName) (*sagav1.OrderSaga, error) {
	obj := &sagav1.OrderSaga{}
	if err := r.Get(ctx, name, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(name.String())
			return nil, nil
		}
		return nil, err
	}
	if rv, ok := r.written.Load(name.String()); ok && rv.(string) != obj.ResourceVersion {
		live := &sagav1.OrderSaga{}
		if err := r.APIReader.Get(ctx, name, live); err != nil {
			if apierrors.IsNotFound(err) {
				r.forget(name.String())
				return nil, nil
			}
			return nil, err
		}
		return live, nil
	}
	return obj, nil
}

func (r *OrderSagaReconciler) forget(key string) {
	r.written.Delete(key)
	r.Metrics.ObservePhase(key, "")
	r.Metrics.ObserveInconsistent(key, false)
}

// policies resolves the call settings of every step whose Participant exists.
func (r *OrderSagaReconciler) policies(ctx context.Context, obj *sagav1.OrderSaga) (map[string]saga.StepPolicies, error) {
	out := make(map[string]saga.StepPolicies, len(obj.Spec.Steps))
	seen := map[string]*sagav1.Participant{}
	for _, step := range obj.Spec.Steps {
		p, ok := seen[step.Participant]
		if !ok {
			p = &sagav1.Participant{}
			if err := r.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: step.Participant}, p); err != nil {
				if !apierrors.IsNotFound(err) {
					return nil, err
				}
				p = nil
			}
			seen[step.Participant] = p
		}
		if p != nil {
			out[step.Name] = saga.Policies(p.Spec.Timeout, p.Spec.Retry, step)
		}
	}
	return out, nil
}

// call makes one participant call. Without a result it returns why the
// call could not be sent: a blocker (the token Secret is missing), or
// nothing when the Participant is gone; the saga then decides again.
func (r *OrderSagaReconciler) call(ctx context.Context, obj *sagav1.OrderSaga, c *saga.Call, p saga.StepPolicies) (*saga.Result, *saga.Blocker, error) {
	log := logf.FromContext(ctx).WithValues("step", c.Step, "direction", c.Direction, "attempt", c.Attempt)
	_, ep, err := participants.Resolve(ctx, secretsFrom(r.Client, r.APIReader), obj.Namespace, c.Participant)
	switch {
	case errors.Is(err, participants.ErrParticipantNotFound):
		return nil, nil, nil
	case errors.Is(err, participants.ErrCredentialsNotFound):
		return nil, &saga.Blocker{Reason: sagav1.ReasonCredentialsNotFound, Message: err.Error()}, nil
	case err != nil:
		return nil, nil, err
	}
	res := send(ctx, r.Participants, r.Metrics, obj, ep, p, c)
	if res.Outcome != saga.OutcomeOK && res.Error != nil {
		log.V(1).Info("participant call failed", "outcome", res.Outcome, "code", res.Error.Code, "httpStatus", res.Error.HTTPStatus)
	}
	return &res, nil, nil
}

// emit records an Event per transition and the metrics of saga endings.
func (r *OrderSagaReconciler) emit(ctx context.Context, obj *sagav1.OrderSaga, before *sagav1.OrderSagaStatus, ts []saga.Transition) {
	for _, t := range ts {
		typ := corev1.EventTypeNormal
		if t.Warning {
			typ = corev1.EventTypeWarning
		}
		action := "Reconcile"
		if t.Step != "" {
			action = "Step"
		}
		r.Recorder.Eventf(obj, nil, typ, t.Reason, action, "%s", t.Message)
		if t.Reason == sagav1.ReasonCompensationFailed && t.Step != "" {
			r.Metrics.CompensationFailures.WithLabelValues(obj.Namespace, participantOf(obj, t.Step), t.Step).Inc()
		}
	}
	if !before.Phase.Terminal() && obj.Status.Phase.Terminal() && obj.Status.StartTime != nil && obj.Status.CompletionTime != nil {
		r.Metrics.Completed.WithLabelValues(obj.Namespace, string(obj.Status.Phase)).Inc()
		r.Metrics.SagaDuration.WithLabelValues(string(obj.Status.Phase)).
			Observe(obj.Status.CompletionTime.Sub(obj.Status.StartTime.Time).Seconds())
		logf.FromContext(ctx).Info("saga ended", "phase", obj.Status.Phase)
	}
}

// release removes the finalizer so a deleted saga goes away.
func (r *OrderSagaReconciler) release(ctx context.Context, obj *sagav1.OrderSaga) error {
	patch := client.MergeFromWithOptions(obj.DeepCopy(), client.MergeFromWithOptimisticLock{})
	if !controllerutil.RemoveFinalizer(obj, sagav1.Finalizer) {
		return nil
	}
	if err := r.Patch(ctx, obj, patch); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return nil // the next event brings us back, or the object is gone
		}
		return err
	}
	r.written.Store(client.ObjectKeyFromObject(obj).String(), obj.ResourceVersion)
	return nil
}

// expire deletes an ended saga once ttlSecondsAfterFinished has passed.
func (r *OrderSagaReconciler) expire(ctx context.Context, obj *sagav1.OrderSaga) (ctrl.Result, error) {
	if controllerutil.ContainsFinalizer(obj, sagav1.Finalizer) {
		// An ended saga has nothing to compensate on delete.
		if err := r.release(ctx, obj); err != nil {
			return ctrl.Result{}, err
		}
	}
	ttl := obj.Spec.TTLSecondsAfterFinished
	if ttl == nil || obj.Status.CompletionTime == nil {
		return ctrl.Result{}, nil
	}
	left := obj.Status.CompletionTime.Add(time.Duration(*ttl) * time.Second).Sub(r.now())
	if left > 0 {
		return ctrl.Result{RequeueAfter: left}, nil
	}
	uid := obj.UID
	err := r.Delete(ctx, obj, client.Preconditions{UID: &uid}, client.PropagationPolicy("Background"))
	return ctrl.Result{}, client.IgnoreNotFound(err)
}

func (r *OrderSagaReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *OrderSagaReconciler) jitter() float64 {
	if r.Jitter != nil {
		return r.Jitter()
	}
	return rand.Float64()
}

func requeueOnConflict(err error) (ctrl.Result, error) {
	if apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: time.Millisecond}, nil
	}
	if apierrors.IsNotFound(err) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, err
}

func observedPhase(obj *sagav1.OrderSaga) sagav1.SagaPhase {
	if obj.Status.Phase == "" {
		return sagav1.SagaPending
	}
	return obj.Status.Phase
}

func participantOf(obj *sagav1.OrderSaga, step string) string {
	for _, s := range obj.Spec.Steps {
		if s.Name == step {
			return s.Participant
		}
	}
	return ""
}

// SetupWithManager registers the reconciler, the Participant index and the
// watch that wakes sagas when a Participant they need appears or changes.
func (r *OrderSagaReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Metrics == nil {
		r.Metrics = DefaultMetrics()
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &sagav1.OrderSaga{}, participantIndex,
		func(o client.Object) []string {
			s := o.(*sagav1.OrderSaga)
			names := make([]string, 0, len(s.Spec.Steps))
			for _, st := range s.Spec.Steps {
				names = append(names, st.Participant)
			}
			return names
		}); err != nil {
		return fmt.Errorf("indexing sagas by participant: %w", err)
	}
	workers := r.MaxConcurrentReconciles
	if workers <= 0 {
		workers = 64
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&sagav1.OrderSaga{}).
		Watches(&sagav1.Participant{}, handler.EnqueueRequestsFromMapFunc(r.sagasForParticipant),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Named("ordersaga").
		Complete(r)
}

// sagasForParticipant maps a Participant to the unfinished sagas that use it.
func (r *OrderSagaReconciler) sagasForParticipant(ctx context.Context, o client.Object) []reconcile.Request {
	var list sagav1.OrderSagaList
	if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()),
		client.MatchingFields{participantIndex: o.GetName()}); err != nil {
		logf.FromContext(ctx).Error(err, "listing sagas for participant", "participant", o.GetName())
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if !list.Items[i].Status.Phase.Terminal() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}

// secretsFrom reads Secrets from the API server (they are never cached, so
// the operator does not watch every Secret of the cluster) and everything
// else from the cache.
func secretsFrom(cached client.Reader, live client.Reader) client.Reader {
	return splitReader{cached: cached, live: live}
}

type splitReader struct{ cached, live client.Reader }

func (s splitReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Secret); ok {
		return s.live.Get(ctx, key, obj, opts...)
	}
	return s.cached.Get(ctx, key, obj, opts...)
}

func (s splitReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return s.cached.List(ctx, list, opts...)
}
