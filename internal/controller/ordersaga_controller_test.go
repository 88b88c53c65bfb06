package controller

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
	"github.com/sagaops/saga-operator/internal/participants"
	"github.com/sagaops/saga-operator/internal/participants/participanttest"
)

// shop is one fake participant server with the four Participants of the
// reference shop pointing at it, so the order of every call is one list.
type shop struct {
	ns, shard string
	srv       *participanttest.Server
}

func newShop(shard string, participantSpec func(*sagav1.ParticipantSpec)) *shop {
	GinkgoHelper()
	s := &shop{ns: newNamespace(), shard: shard, srv: participanttest.NewServer()}
	DeferCleanup(s.srv.Close)
	s.srv.SetBehavior("create", participanttest.Behavior{Outputs: func(r participants.ActionRequest) map[string]string {
		return map[string]string{"orderRef": "ord-" + r.Order.OrderID}
	}})
	s.srv.SetBehavior("charge", participanttest.Behavior{Outputs: func(r participants.ActionRequest) map[string]string {
		return map[string]string{"paymentId": "pay-" + r.SagaUID[:8]}
	}})
	for _, name := range []string{"orders", "payment", "inventory", "notification"} {
		s.addParticipant(name, participantSpec)
	}
	return s
}

func (s *shop) addParticipant(name string, tune func(*sagav1.ParticipantSpec)) {
	GinkgoHelper()
	p := &sagav1.Participant{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns, Labels: map[string]string{shardLabel: s.shard}},
		Spec: sagav1.ParticipantSpec{
			URL:     s.srv.URL(),
			Timeout: &metav1.Duration{Duration: 2 * time.Second},
			Retry: &sagav1.RetryPolicy{
				InitialBackoff: &metav1.Duration{Duration: 50 * time.Millisecond},
				MaxBackoff:     &metav1.Duration{Duration: 200 * time.Millisecond},
			},
		},
	}
	if tune != nil {
		tune(&p.Spec)
	}
	Expect(k8sClient.Create(suiteCtx, p)).To(Succeed())
}

// saga creates an OrderSaga of the four shop steps.
func (s *shop) saga(name string, tune func(*sagav1.OrderSaga)) *sagav1.OrderSaga {
	GinkgoHelper()
	o := &sagav1.OrderSaga{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns, Labels: map[string]string{shardLabel: s.shard}},
		Spec: sagav1.OrderSagaSpec{
			Order: sagav1.Order{OrderID: name, UserID: "u-42", Currency: "USD",
				Items: []sagav1.OrderItem{{SKU: "SKU-1", Quantity: 2, UnitPriceCents: 1999}}},
			Steps: shopSteps(),
		},
	}
	if tune != nil {
		tune(o)
	}
	Expect(k8sClient.Create(suiteCtx, o)).To(Succeed())
	return o
}

func shopSteps() []sagav1.Step {
	return []sagav1.Step{
		{Name: "create-order", Participant: "orders", Action: "create", Compensation: "cancel"},
		{Name: "process-payment", Participant: "payment", Action: "charge", Compensation: "refund"},
		{Name: "reserve-inventory", Participant: "inventory", Action: "reserve", Compensation: "release"},
		{Name: "send-confirmation", Participant: "notification", Action: "send-confirmation", Compensation: "send-cancellation"},
	}
}

func get(o *sagav1.OrderSaga) *sagav1.OrderSaga {
	GinkgoHelper()
	out := &sagav1.OrderSaga{}
	Expect(k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(o), out)).To(Succeed())
	return out
}

func phaseOf(o *sagav1.OrderSaga) func() sagav1.SagaPhase {
	return func() sagav1.SagaPhase {
		out := &sagav1.OrderSaga{}
		if err := k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(o), out); err != nil {
			return ""
		}
		return out.Status.Phase
	}
}

func stepPhases(o *sagav1.OrderSaga) map[string]sagav1.StepPhase {
	out := map[string]sagav1.StepPhase{}
	for _, s := range o.Status.Steps {
		out[s.Name] = s.Phase
	}
	return out
}

// calls lists "action/direction" of the requests for one saga, in order.
func (s *shop) calls(o *sagav1.OrderSaga) []string {
	var out []string
	prev := ""
	for _, r := range s.srv.Requests() {
		if r.Body.SagaUID != string(o.UID) {
			continue
		}
		c := r.Body.Action + "/" + r.Body.Direction
		if c != prev { // retries of one call collapse into one entry
			out = append(out, c)
		}
		prev = c
	}
	return out
}

func conditionStatus(o *sagav1.OrderSaga, t string) metav1.ConditionStatus {
	c := meta.FindStatusCondition(o.Status.Conditions, t)
	if c == nil {
		return ""
	}
	return c.Status
}

func eventsFor(o *sagav1.OrderSaga) []eventsv1.Event {
	GinkgoHelper()
	var list eventsv1.EventList
	Expect(k8sClient.List(suiteCtx, &list, client.InNamespace(o.Namespace))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == o.Name && e.Regarding.Kind == "OrderSaga" {
			out = append(out, e)
		}
	}
	return out
}

var _ = Describe("OrderSaga reconciler", func() {
	var (
		shard string
		mgr   *testManager
	)
	BeforeEach(func() {
		shard = newShard()
		mgr = runManager(shard, nil)
	})

	It("runs every step in order, passes outputs along and ends Succeeded within steps+3 writes", func() {
		s := newShop(shard, nil)
		o := s.saga("happy", nil)
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaSucceeded))

		got := get(o)
		Expect(stepPhases(got)).To(Equal(map[string]sagav1.StepPhase{
			"create-order": sagav1.StepSucceeded, "process-payment": sagav1.StepSucceeded,
			"reserve-inventory": sagav1.StepSucceeded, "send-confirmation": sagav1.StepSucceeded,
		}))
		Expect(got.Status.Steps[1].Outputs).To(HaveKeyWithValue("paymentId", "pay-"+string(o.UID)[:8]))
		Expect(got.Status.StartTime).NotTo(BeNil())
		Expect(got.Status.CompletionTime).NotTo(BeNil())
		Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		Expect(conditionStatus(got, sagav1.ReadyCondition)).To(Equal(metav1.ConditionTrue))
		Expect(conditionStatus(got, sagav1.ReconcilingCondition)).NotTo(Equal(metav1.ConditionTrue))
		Expect(conditionStatus(got, sagav1.StalledCondition)).NotTo(Equal(metav1.ConditionTrue))
		// An ended saga has nothing to compensate on delete.
		Eventually(func() []string { return get(o).Finalizers }).WithTimeout(10 * time.Second).Should(BeEmpty())
		got = get(o)
		Expect(s.calls(o)).To(Equal([]string{"create/forward", "charge/forward", "reserve/forward", "send-confirmation/forward"}))

		// Later steps see the outputs of the earlier ones.
		for _, r := range s.srv.Requests() {
			if r.Body.Action == "reserve" {
				Expect(r.Body.Outputs).To(HaveKey("process-payment"))
				Expect(r.Body.Outputs["create-order"]).To(HaveKeyWithValue("orderRef", "ord-happy"))
				Expect(r.IdempotencyKey).To(Equal(string(o.UID) + ":reserve-inventory:forward"))
				Expect(r.SagaID).To(Equal(o.Namespace + "/happy"))
				Expect(r.Body.Order.TotalCents).To(Equal(int64(3998)))
				Expect(r.Traceparent).To(BeEmpty(), "tracing is off")
			}
		}

		m := mgr.saga.Metrics
		Expect(testutil.ToFloat64(m.Completed.WithLabelValues(o.Namespace, "Succeeded"))).To(Equal(1.0))
		Expect(testutil.ToFloat64(m.StepCalls.WithLabelValues("payment", "charge", "forward", "OK"))).To(Equal(1.0))
		Expect(testutil.ToFloat64(m.Active.WithLabelValues(o.Namespace))).To(Equal(0.0))

		steps := len(o.Spec.Steps)
		writes := mgr.writes.Writes(o.Namespace, o.Name)
		GinkgoWriter.Printf("API writes for a %d-step saga: %d\n", steps, writes)
		Expect(writes).To(BeNumerically("<=", steps+3))

		By("a reconcile that changes nothing writes nothing")
		patch := client.MergeFrom(got.DeepCopy())
		got.Annotations = map[string]string{"touch": "1"}
		Expect(k8sClient.Patch(suiteCtx, got, patch)).To(Succeed())
		Consistently(func() int { return mgr.writes.Writes(o.Namespace, o.Name) }).
			WithTimeout(2 * time.Second).Should(Equal(writes))
		Expect(eventsFor(o)).NotTo(BeEmpty())
	})

	It("compensates the earlier steps in reverse when step 3 is rejected", func() {
		s := newShop(shard, nil)
		s.srv.SetBehavior("reserve", participanttest.Behavior{
			Reject: participanttest.RejectAlways(409, "insufficient_stock", "SKU-1: 0 left")})
		o := s.saga("rejected", nil)
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaCompensated))

		Expect(s.calls(o)).To(Equal([]string{
			"create/forward", "charge/forward", "reserve/forward", "refund/compensate", "cancel/compensate"}))
		got := get(o)
		Expect(stepPhases(got)).To(Equal(map[string]sagav1.StepPhase{
			"create-order": sagav1.StepCompensated, "process-payment": sagav1.StepCompensated,
			"reserve-inventory": sagav1.StepFailed, "send-confirmation": sagav1.StepSkipped,
		}))
		Expect(got.Status.Steps[2].LastError).NotTo(BeNil())
		Expect(got.Status.Steps[2].LastError.Code).To(Equal("insufficient_stock"))
		for _, r := range s.srv.Requests() {
			if r.Body.Action == "refund" {
				Expect(r.Body.Outputs["process-payment"]).To(HaveKeyWithValue("paymentId", "pay-"+string(o.UID)[:8]))
				Expect(r.IdempotencyKey).To(Equal(string(o.UID) + ":process-payment:compensate"))
			}
		}
		Expect(conditionStatus(got, sagav1.ReadyCondition)).To(Equal(metav1.ConditionFalse))
	})

	It("retries transient failures with backoff and succeeds", func() {
		s := newShop(shard, nil)
		s.srv.SetBehavior("charge", participanttest.Behavior{Script: []participanttest.Answer{{Status: 503}, {Status: 503}}})
		o := s.saga("transient", nil)
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaSucceeded))

		got := get(o)
		Expect(got.Status.Steps[1].Attempts).To(Equal(int32(3)))
		var times []time.Time
		for _, r := range s.srv.Requests() {
			if r.Body.Action == "charge" {
				times = append(times, r.Time)
				Expect(r.IdempotencyKey).To(Equal(string(o.UID) + ":process-payment:forward"))
			}
		}
		Expect(times).To(HaveLen(3))
		// initialBackoff 50ms doubling, jitter within [initial, max].
		Expect(times[1].Sub(times[0])).To(BeNumerically(">=", 50*time.Millisecond))
		Expect(times[2].Sub(times[1])).To(BeNumerically(">=", 50*time.Millisecond))
	})

	It("compensates a step whose calls time out until attempts run out, with the earlier steps", func() {
		s := newShop(shard, nil)
		s.srv.SetBehavior("reserve", participanttest.Behavior{Hang: true})
		o := s.saga("timeouts", func(o *sagav1.OrderSaga) {
			two := int32(2)
			o.Spec.Steps[2].Timeout = &metav1.Duration{Duration: 300 * time.Millisecond}
			o.Spec.Steps[2].Retry = &sagav1.RetryPolicy{MaxAttempts: &two}
		})
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaCompensated))
		Expect(s.calls(o)).To(Equal([]string{"create/forward", "charge/forward", "reserve/forward",
			"release/compensate", "refund/compensate", "cancel/compensate"}))
		got := get(o)
		Expect(got.Status.Steps[2].Attempts).To(Equal(int32(2)))
		Expect(stepPhases(got)).To(HaveKeyWithValue("reserve-inventory", sagav1.StepCompensated))
		Expect(stepPhases(got)).To(HaveKeyWithValue("send-confirmation", sagav1.StepSkipped))
	})

	It("fails and stalls with a Warning Event naming the step when a compensation is refused", func() {
		s := newShop(shard, nil)
		s.srv.SetBehavior("reserve", participanttest.Behavior{
			Reject: participanttest.RejectAlways(422, "insufficient_stock", "none left")})
		s.srv.SetBehavior("refund", participanttest.Behavior{
			Reject: participanttest.RejectAlways(409, "refund_window_closed", "too late")})
		o := s.saga("refused", nil)
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaFailed))

		got := get(o)
		Expect(conditionStatus(got, sagav1.StalledCondition)).To(Equal(metav1.ConditionTrue))
		Expect(meta.FindStatusCondition(got.Status.Conditions, sagav1.StalledCondition).Reason).
			To(Equal(sagav1.ReasonCompensationFailed))
		Expect(stepPhases(got)).To(HaveKeyWithValue("process-payment", sagav1.StepCompensationFailed))
		Eventually(func() []eventsv1.Event { return eventsFor(o) }).WithTimeout(10 * time.Second).Should(ContainElement(
			SatisfyAll(
				HaveField("Type", "Warning"),
				HaveField("Reason", sagav1.ReasonCompensationFailed),
				HaveField("Note", ContainSubstring("process-payment")),
			)))
		Expect(testutil.ToFloat64(mgr.saga.Metrics.CompensationFailures.WithLabelValues(o.Namespace, "payment", "process-payment"))).
			To(Equal(1.0))
		// create-order was never compensated: the saga stopped at the refusal.
		Expect(s.calls(o)).NotTo(ContainElement("cancel/compensate"))

		By("the retry annotation re-drives the dead letter once the participant accepts")
		s.srv.SetBehavior("refund", participanttest.Behavior{})
		// A refused compensation is replayed for its key by a well-behaved
		// participant, so an operator fixes the participant's record first.
		s.srv.ForgetKey(participants.IdempotencyKey(string(o.UID), "process-payment", "compensate"))
		patch := client.MergeFrom(got.DeepCopy())
		got.Annotations = map[string]string{sagav1.RetryAnnotation: "1"}
		Expect(k8sClient.Patch(suiteCtx, got, patch)).To(Succeed())
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaCompensated))
	})

	It("stalls on a missing Participant and resumes by itself when it appears", func() {
		s := newShop(shard, nil)
		o := s.saga("missing", func(o *sagav1.OrderSaga) {
			o.Spec.Steps[1].Participant = "billing"
		})
		Eventually(func() string {
			c := meta.FindStatusCondition(get(o).Status.Conditions, sagav1.StalledCondition)
			if c == nil || c.Status != metav1.ConditionTrue {
				return ""
			}
			return c.Reason
		}).WithTimeout(30 * time.Second).Should(Equal(sagav1.ReasonParticipantNotFound))
		Expect(get(o).Status.Phase).To(Equal(sagav1.SagaRunning))

		s.addParticipant("billing", nil)
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaSucceeded))
		Expect(conditionStatus(get(o), sagav1.StalledCondition)).NotTo(Equal(metav1.ConditionTrue))
	})

	It("sets Ready on Participants from /healthz", func() {
		s := newShop(shard, nil)
		ready := func() metav1.ConditionStatus {
			p := &sagav1.Participant{}
			Expect(k8sClient.Get(suiteCtx, client.ObjectKey{Namespace: s.ns, Name: "payment"}, p)).To(Succeed())
			c := meta.FindStatusCondition(p.Status.Conditions, sagav1.ReadyCondition)
			if c == nil {
				return ""
			}
			return c.Status
		}
		Eventually(ready).WithTimeout(20 * time.Second).Should(Equal(metav1.ConditionTrue))
		s.srv.SetHealthy(false)
		Eventually(ready).WithTimeout(20 * time.Second).Should(Equal(metav1.ConditionFalse))
	})

	It("compensates what is done when cancelled, and on delete with the default policy", func() {
		s := newShop(shard, nil)
		s.srv.SetBehavior("reserve", participanttest.Behavior{Hang: true})
		c := s.saga("cancelled", nil)
		d := s.saga("deleted", nil)
		for _, o := range []*sagav1.OrderSaga{c, d} {
			Eventually(func() string { return get(o).Status.CurrentStep }).WithTimeout(30 * time.Second).
				Should(Equal("reserve-inventory"))
		}
		got := get(c)
		patch := client.MergeFrom(got.DeepCopy())
		got.Spec.Cancel = true
		Expect(k8sClient.Patch(suiteCtx, got, patch)).To(Succeed())
		Expect(k8sClient.Delete(suiteCtx, d)).To(Succeed())

		Eventually(phaseOf(c)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaCompensated))
		Expect(get(c).Status.CompensationReason).To(Equal(sagav1.ReasonCancelled))
		Eventually(func() bool {
			err := k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(d), &sagav1.OrderSaga{})
			return err != nil && client.IgnoreNotFound(err) == nil
		}).WithTimeout(30 * time.Second).Should(BeTrue())
		for _, o := range []*sagav1.OrderSaga{c, d} {
			Expect(s.srv.StepState(string(o.UID), "process-payment")).To(Equal(participants.StateCompensated))
			Expect(s.srv.StepState(string(o.UID), "create-order")).To(Equal(participants.StateCompensated))
		}
	})
})

var _ = Describe("OrderSaga reconciler across a crash", func() {
	It("finishes every saga after the manager stops mid-call, applying each key once", func() {
		shard := newShard()
		s := newShop(shard, nil)
		s.srv.SetBehavior("charge", participanttest.Behavior{Latency: 2 * time.Second, Outputs: func(r participants.ActionRequest) map[string]string {
			return map[string]string{"paymentId": "pay-" + r.SagaUID[:8]}
		}})
		first := startManager(shard, nil)
		o := s.saga("crash", nil)
		Eventually(func() int {
			return len(s.srv.Calls(participants.IdempotencyKey(string(o.UID), "process-payment", "forward")))
		}).
			WithTimeout(30 * time.Second).Should(Equal(1))
		first.Stop() // the charge is in flight: the participant applies it after the caller is gone

		s.srv.SetBehavior("charge", participanttest.Behavior{Outputs: func(r participants.ActionRequest) map[string]string {
			return map[string]string{"paymentId": "pay-" + r.SagaUID[:8]}
		}})
		runManager(shard, nil) // a new manager, from what the status says
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaSucceeded))

		for _, key := range s.srv.Keys() {
			Expect(s.srv.AppliedCount(key)).To(BeNumerically("<=", 1), key)
		}
		charge := s.srv.Calls(participants.IdempotencyKey(string(o.UID), "process-payment", "forward"))
		Expect(len(charge)).To(BeNumerically(">=", 2), "the new manager re-sent the in-flight call")
		Expect(s.srv.StepState(string(o.UID), "process-payment")).To(Equal(participants.StateApplied))
	})
})

var _ = Describe("OrderSaga reconciler under load", Label("load"), func() {
	It("ends 500 sagas with transient faults and lost replies, and every ledger agrees", func() {
		const n = 500
		shard := newShard()
		s := newShop(shard, nil)
		s.srv.SetSeed(42)
		out := func(k string) func(participants.ActionRequest) map[string]string {
			return func(r participants.ActionRequest) map[string]string { return map[string]string{k: r.SagaUID[:8]} }
		}
		for _, a := range []string{"create", "charge", "reserve", "send-confirmation", "cancel", "refund", "release", "send-cancellation"} {
			s.srv.SetBehavior(a, participanttest.Behavior{TransientRate: 0.05, LostReplyRate: 0.01, Outputs: out("ref")})
		}
		// One order in ten is out of stock.
		s.srv.SetBehavior("reserve", participanttest.Behavior{TransientRate: 0.05, LostReplyRate: 0.01,
			Reject: func(r participants.ActionRequest) *participanttest.Rejection {
				if strings.HasSuffix(r.Order.OrderID, "7") {
					return &participanttest.Rejection{Status: 409, Code: "insufficient_stock", Message: "out of stock"}
				}
				return nil
			}})
		runManager(shard, nil)

		start := time.Now()
		sagas := make([]*sagav1.OrderSaga, n)
		for i := range n {
			sagas[i] = s.saga(fmt.Sprintf("load-%03d", i), nil)
		}
		Eventually(func() int {
			var list sagav1.OrderSagaList
			Expect(k8sClient.List(suiteCtx, &list, client.InNamespace(s.ns))).To(Succeed())
			done := 0
			for _, o := range list.Items {
				if o.Status.Phase.Terminal() {
					done++
				}
			}
			return done
		}).WithTimeout(5 * time.Minute).WithPolling(time.Second).Should(Equal(n))
		elapsed := time.Since(start)
		GinkgoWriter.Printf("500 sagas ended in %s (%.0f sagas/s)\n", elapsed.Round(time.Millisecond), n/elapsed.Seconds())
		AddReportEntry("500-saga load", fmt.Sprintf("%s, %.0f sagas/s", elapsed.Round(time.Millisecond), n/elapsed.Seconds()))

		for _, key := range s.srv.Keys() {
			Expect(s.srv.AppliedCount(key)).To(BeNumerically("<=", 1), key)
		}
		var succeeded, compensated int
		for _, o := range sagas {
			got := get(o)
			uid := string(got.UID)
			switch got.Status.Phase {
			case sagav1.SagaSucceeded:
				succeeded++
				for _, st := range got.Spec.Steps {
					Expect(s.srv.StepState(uid, st.Name)).To(Equal(participants.StateApplied), "%s %s", o.Name, st.Name)
				}
			case sagav1.SagaCompensated:
				compensated++
				Expect(strings.HasSuffix(got.Spec.Order.OrderID, "7")).To(BeTrue(), o.Name)
				for _, st := range got.Spec.Steps {
					Expect(s.srv.StepState(uid, st.Name)).To(BeElementOf(participants.StateCompensated, participants.StateNone),
						"%s %s", o.Name, st.Name)
				}
			default:
				Fail(fmt.Sprintf("%s ended %s", o.Name, got.Status.Phase))
			}
		}
		Expect(succeeded + compensated).To(Equal(n))
		Expect(compensated).To(Equal(n / 10))
	})
})
