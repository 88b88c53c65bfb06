package controller

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// TestConsistencyDue covers when a check is due, without a cluster.
func TestConsistencyDue(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { m := metav1.NewTime(t0.Add(d)); return &m }
	consistent := func(reason string, gen int64) []metav1.Condition {
		return []metav1.Condition{{Type: sagav1.ConsistentCondition, Status: metav1.ConditionUnknown, Reason: reason, ObservedGeneration: gen}}
	}
	saga := func(tune func(*sagav1.OrderSaga)) *sagav1.OrderSaga {
		o := &sagav1.OrderSaga{}
		o.Generation = 1
		o.CreationTimestamp = metav1.NewTime(t0.Add(-time.Minute))
		o.Status.Phase = sagav1.SagaSucceeded
		o.Status.CompletionTime = at(0)
		if tune != nil {
			tune(o)
		}
		return o
	}
	checkedAt := func(d time.Duration, reason string) func(*sagav1.OrderSaga) {
		return func(o *sagav1.OrderSaga) {
			o.Status.LastConsistencyCheck = at(d)
			o.Status.Conditions = consistent(reason, o.Generation)
		}
	}
	interval := func(d time.Duration) func(*sagav1.OrderSaga) {
		return func(o *sagav1.OrderSaga) {
			o.Spec.Consistency = &sagav1.ConsistencySpec{Interval: &metav1.Duration{Duration: d}}
		}
	}
	both := func(fs ...func(*sagav1.OrderSaga)) func(*sagav1.OrderSaga) {
		return func(o *sagav1.OrderSaga) {
			for _, f := range fs {
				f(o)
			}
		}
	}
	r := &ConsistencyReconciler{}
	for _, tc := range []struct {
		name string
		obj  *sagav1.OrderSaga
		st   checkState
		want time.Time
		ok   bool
	}{
		{"first check checkAfter (default 30s) after the end", saga(nil), checkState{}, t0.Add(30 * time.Second), true},
		{"no completion time: counted from creation", saga(func(o *sagav1.OrderSaga) { o.Status.CompletionTime = nil }),
			checkState{}, t0.Add(-time.Minute + 30*time.Second), true},
		{"then every interval (default 10m)", saga(checkedAt(time.Minute, sagav1.ReasonConsistent)), checkState{}, t0.Add(11 * time.Minute), true},
		{"the in-memory check time wins over the whole seconds of the status",
			saga(checkedAt(time.Minute, sagav1.ReasonConsistent)), checkState{checked: t0.Add(time.Minute + 900*time.Millisecond)},
			t0.Add(11*time.Minute + 900*time.Millisecond), true},
		{"interval 0: checked once", saga(both(interval(0), checkedAt(time.Minute, sagav1.ReasonStepNotApplied))), checkState{}, time.Time{}, false},
		{"interval 0: not yet checked", saga(interval(0)), checkState{}, t0.Add(30 * time.Second), true},
		{"a spec change: at once", saga(both(checkedAt(time.Minute, sagav1.ReasonConsistent), func(o *sagav1.OrderSaga) { o.Generation = 2 })),
			checkState{}, time.Time{}, true},
		{"unreachable left by an earlier process: 5s later", saga(both(interval(0), checkedAt(time.Minute, sagav1.ReasonParticipantUnreachable))),
			checkState{}, t0.Add(time.Minute + 5*time.Second), true},
		{"backing off", saga(checkedAt(time.Minute, sagav1.ReasonParticipantUnreachable)), checkState{retryAt: t0.Add(time.Hour)}, t0.Add(time.Hour), true},
		{"ended again after the last check", saga(both(checkedAt(time.Minute, sagav1.ReasonConsistent),
			func(o *sagav1.OrderSaga) { o.Status.CompletionTime = at(time.Hour) })), checkState{}, t0.Add(time.Hour + 30*time.Second), true},
	} {
		st := tc.st
		got, ok := r.due(tc.obj, &st)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("%s: due %v %v, want %v %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}

	var waits []time.Duration
	for n := 1; n <= 9; n++ {
		waits = append(waits, r.backoff(saga(nil), n))
	}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second,
		160 * time.Second, 320 * time.Second, 10 * time.Minute, 10 * time.Minute}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("backoff %v, want %v", waits, want)
		}
	}
	if d := r.backoff(saga(interval(time.Second)), 3); d != 5*time.Second {
		t.Fatalf("backoff with a 1s interval: %v", d)
	}
	if d := r.backoff(saga(interval(0)), 20); d != DefaultCheckInterval {
		t.Fatalf("backoff with interval 0: %v", d)
	}
}
