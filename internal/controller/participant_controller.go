package controller

import (
	"context"
	"time"

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
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
	"github.com/sagaops/saga-operator/internal/participants"
)

// ParticipantReconciler probes each Participant's /healthz on an interval
// and reports the answer as its Ready condition.
type ParticipantReconciler struct {
	client.Client
	APIReader    client.Reader
	Recorder     events.EventRecorder
	Participants *participants.Client
	Metrics      *Metrics
	// ProbeInterval is the time between probes (default 30s).
	ProbeInterval time.Duration
}

// +kubebuilder:rbac:groups=saga.sagaops.io,resources=participants/status,verbs=get;update;patch

// Reconcile probes one Participant and records the result when it changed.
func (r *ParticipantReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &sagav1.Participant{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			r.Metrics.ParticipantReady.DeleteLabelValues(req.Namespace, req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	interval := r.ProbeInterval
	if interval <= 0 {
		interval = 30 * time.Second
	}

	cond := metav1.Condition{Type: sagav1.ReadyCondition, ObservedGeneration: p.Generation}
	_, ep, err := participants.Resolve(ctx, secretsFrom(r.Client, r.APIReader), p.Namespace, p.Name)
	if err == nil {
		probeCtx, cancel := context.WithTimeout(ctx, ep.Timeout)
		err = r.Participants.Health(probeCtx, ep)
		cancel()
	}
	if err != nil {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, sagav1.ReasonUnhealthy, truncate(err.Error(), 512)
	} else {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, sagav1.ReasonHealthy, "GET /healthz answered 200"
	}

	ready := 0.0
	if cond.Status == metav1.ConditionTrue {
		ready = 1
	}
	r.Metrics.ParticipantReady.WithLabelValues(p.Namespace, p.Name).Set(ready)

	before := p.Status.DeepCopy()
	meta.SetStatusCondition(&p.Status.Conditions, cond)
	p.Status.ObservedGeneration = p.Generation
	if equality.Semantic.DeepEqual(before, &p.Status) {
		return ctrl.Result{RequeueAfter: interval}, nil
	}
	now := metav1.Now()
	p.Status.LastProbeTime = &now
	if err := r.Status().Update(ctx, p); err != nil {
		return requeueOnConflict(err)
	}
	if prev := meta.FindStatusCondition(before.Conditions, sagav1.ReadyCondition); prev == nil || prev.Status != cond.Status {
		typ := corev1.EventTypeNormal
		if cond.Status != metav1.ConditionTrue {
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(p, nil, typ, cond.Reason, "Probe", "%s", cond.Message)
	}
	return ctrl.Result{RequeueAfter: interval}, nil
}

// SetupWithManager registers the reconciler.
func (r *ParticipantReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Metrics == nil {
		r.Metrics = DefaultMetrics()
	}
	return ctrl.NewControllerManagedBy(mgr).
		// Status writes do not re-probe; the interval and spec changes do.
		For(&sagav1.Participant{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Named("participant").
		Complete(r)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 {
		n--
	}
	return s[:n]
}
