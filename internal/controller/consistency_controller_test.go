package controller

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
	"github.com/sagaops/saga-operator/internal/participants"
	"github.com/sagaops/saga-operator/internal/saga"
)

// checkedOften makes a saga's consistency checks quick: the first one a
// second after it ends, then every second.
func checkedOften(repair sagav1.RepairPolicy) func(*sagav1.OrderSaga) {
	return func(o *sagav1.OrderSaga) {
		o.Spec.Consistency = &sagav1.ConsistencySpec{
			CheckAfter: &metav1.Duration{Duration: time.Second},
			Interval:   &metav1.Duration{Duration: time.Second},
			Repair:     repair,
		}
	}
}

// consistent returns the saga's Consistent condition (zero when absent).
func consistent(o *sagav1.OrderSaga) func() metav1.Condition {
	return func() metav1.Condition {
		got := &sagav1.OrderSaga{}
		if err := k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(o), got); err != nil {
			return metav1.Condition{}
		}
		if c := meta.FindStatusCondition(got.Status.Conditions, sagav1.ConsistentCondition); c != nil {
			return *c
		}
		return metav1.Condition{}
	}
}

// stateQueries counts the state queries the shop's participants received
// for one saga.
func (s *shop) stateQueries(o *sagav1.OrderSaga) int {
	n := 0
	for _, r := range s.srv.Requests() {
		if r.Path == participants.StatePathPrefix+string(o.UID) {
			n++
		}
	}
	return n
}

// eventsWith returns the saga's Events of one type and reason.
func eventsWith(o *sagav1.OrderSaga, typ, reason string) func() []eventsv1.Event {
	return func() []eventsv1.Event {
		var out []eventsv1.Event
		for _, e := range eventsFor(o) {
			if e.Type == typ && e.Reason == reason {
				out = append(out, e)
			}
		}
		return out
	}
}

// once matches a list of exactly one Event that was not repeated (the
// events API merges repeats of an Event into a series).
func once() OmegaMatcher {
	return SatisfyAll(HaveLen(1), HaveEach(HaveField("Series", BeNil())))
}

// closedPortURL is the URL of a local port nothing listens on.
func closedPortURL() string {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	addr := l.Addr().String()
	Expect(l.Close()).To(Succeed())
	return "http://" + addr
}

func setParticipantURL(ns, name, url string) {
	GinkgoHelper()
	p := &sagav1.Participant{}
	Expect(k8sClient.Get(suiteCtx, client.ObjectKey{Namespace: ns, Name: name}, p)).To(Succeed())
	p.Spec.URL = url
	Expect(k8sClient.Update(suiteCtx, p)).To(Succeed())
}

var (
	kubeconfigOnce sync.Once
	kubeconfig     []byte
)

// kubectl runs the real kubectl against the test API server, as a user
// would, and returns what it prints; "" when kubectl is not on PATH.
func kubectl(args ...string) string {
	GinkgoHelper()
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		return ""
	}
	kubeconfigOnce.Do(func() {
		user, err := testEnv.AddUser(envtest.User{Name: "kubectl-admin", Groups: []string{"system:masters"}}, nil)
		Expect(err).NotTo(HaveOccurred())
		kubeconfig, err = user.KubeConfig()
		Expect(err).NotTo(HaveOccurred())
	})
	path := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(os.WriteFile(path, kubeconfig, 0o600)).To(Succeed())
	ctx, cancel := context.WithTimeout(suiteCtx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	Expect(cmd.Run()).To(Succeed(), stderr.String())
	GinkgoWriter.Printf("$ kubectl %s\n%s\n", strings.Join(args, " "), stdout.String())
	return stdout.String()
}

var _ = Describe("Consistency checker", func() {
	var (
		shard string
		mgr   *testManager
	)
	BeforeEach(func() {
		shard = newShard()
		mgr = runManager(shard, nil)
	})

	It("flips Consistent to False when a participant loses a step's effect, with one Warning Event however many checks see it", func() {
		s := newShop(shard, nil)
		o := s.saga("tampered", checkedOften(sagav1.RepairNone))
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaSucceeded))
		uid := string(o.UID)
		s.srv.Tamper(uid, "process-payment", participants.StateNone)

		Eventually(consistent(o)).WithTimeout(10 * time.Second).Should(HaveField("Status", metav1.ConditionFalse))
		got := get(o)
		flipped := time.Since(got.Status.CompletionTime.Time)
		GinkgoWriter.Printf("Consistent=False %s after the saga ended (checkAfter 1s)\n", flipped.Round(100*time.Millisecond))
		Expect(flipped).To(BeNumerically("<", 1*time.Second+5*time.Second))
		c := meta.FindStatusCondition(got.Status.Conditions, sagav1.ConsistentCondition)
		Expect(c.Reason).To(Equal(sagav1.ReasonStepNotApplied))
		Expect(c.Message).To(ContainSubstring(`step "process-payment" at participant "payment": expected applied, found none`))
		Expect(c.ObservedGeneration).To(Equal(got.Generation))
		Expect(got.Status.ConsistencyViolations).To(Equal([]string{"process-payment"}))
		Expect(got.Status.LastConsistencyCheck).NotTo(BeNil())

		By("several later checks report nothing new")
		checks := s.stateQueries(o)
		Eventually(func() int { return s.stateQueries(o) }).WithTimeout(15*time.Second).
			Should(BeNumerically(">=", checks+3*4), "three more checks of the four participants")
		Eventually(eventsWith(o, "Warning", sagav1.ReasonStepNotApplied)).WithTimeout(5 * time.Second).Should(once())
		w := eventsWith(o, "Warning", sagav1.ReasonStepNotApplied)()[0]
		Expect(w.Note).To(ContainSubstring(`step "process-payment" at participant "payment": expected applied, found none`))
		Expect(testutil.ToFloat64(mgr.check.Metrics.ConsistencyViolations.WithLabelValues(
			o.Namespace, "payment", "process-payment", sagav1.ReasonStepNotApplied))).To(Equal(1.0))
		Expect(testutil.ToFloat64(mgr.check.Metrics.Inconsistent)).To(Equal(1.0))
		Expect(consistent(o)()).To(HaveField("Reason", sagav1.ReasonStepNotApplied))

		By("what kubectl shows")
		if out := kubectl("get", "osaga", o.Name, "--namespace", o.Namespace); out != "" {
			Expect(out).To(MatchRegexp(`tampered\s+tampered\s+Succeeded\s+False`))
			out = kubectl("describe", "osaga", o.Name, "--namespace", o.Namespace)
			Expect(out).To(MatchRegexp(`Consistency Violations:\s+process-payment`))
			Expect(out).To(MatchRegexp(`Warning\s+StepNotApplied\s+.*step "process-payment" at participant "payment": expected applied, found none`))
		}

		By("the participant agrees again: True and a Normal Event")
		s.srv.Tamper(uid, "process-payment", participants.StateApplied)
		Eventually(consistent(o)).WithTimeout(10 * time.Second).Should(HaveField("Status", metav1.ConditionTrue))
		Expect(get(o).Status.ConsistencyViolations).To(BeEmpty())
		Eventually(eventsWith(o, "Normal", sagav1.ReasonConsistent)).WithTimeout(5 * time.Second).Should(once())
		Expect(eventsWith(o, "Warning", sagav1.ReasonStepNotApplied)()).To(once())
		Expect(testutil.ToFloat64(mgr.check.Metrics.Inconsistent)).To(Equal(0.0))
	})

	It("repairs a participant restored from a backup by re-sending the call with its original key, and asks for a person when that does not help", func() {
		s := newShop(shard, nil)
		o := s.saga("redrive", checkedOften(sagav1.RepairRedrive))
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaSucceeded))
		uid := string(o.UID)
		key := participants.IdempotencyKey(uid, "process-payment", participants.DirectionForward)
		Expect(s.srv.Calls(key)).To(HaveLen(1))
		// The participant lost the charge and its key record: a restore from backup.
		s.srv.ForgetKey(key)
		s.srv.Tamper(uid, "process-payment", participants.StateNone)

		Eventually(eventsWith(o, "Normal", sagav1.ReasonRepaired)).WithTimeout(10 * time.Second).Should(once())
		Expect(consistent(o)()).To(SatisfyAll(HaveField("Status", metav1.ConditionTrue), HaveField("Reason", sagav1.ReasonConsistent)))
		calls := s.srv.Calls(key)
		Expect(calls).To(HaveLen(2))
		first, again := calls[0], calls[1]
		Expect(again.IdempotencyKey).To(Equal(key), "the original key, never a new one")
		Expect(again.Body.Action).To(Equal("charge"))
		Expect(again.Body.Direction).To(Equal(participants.DirectionForward))
		Expect(again.Body.Outputs).To(Equal(first.Body.Outputs))
		Expect(again.Body.Order).To(Equal(first.Body.Order))
		Expect(again.Replayed).To(BeFalse())
		Expect(s.srv.StepState(uid, "process-payment")).To(Equal(participants.StateApplied))
		Expect(eventsWith(o, "Warning", sagav1.ReasonStepNotApplied)()).To(once())
		Expect(get(o).Status.ConsistencyViolations).To(BeEmpty())

		By("a participant that still has the key replays its answer: RepairFailed")
		s.srv.Tamper(uid, "reserve-inventory", participants.StateNone)
		Eventually(consistent(o)).WithTimeout(10 * time.Second).Should(HaveField("Reason", sagav1.ReasonRepairFailed))
		c := consistent(o)()
		Expect(c.Status).To(Equal(metav1.ConditionFalse))
		Expect(c.Message).To(ContainSubstring("a person must act"))
		Expect(c.Message).To(ContainSubstring(`step "reserve-inventory" at participant "inventory": expected applied, found none`))
		reserve := s.srv.Calls(participants.IdempotencyKey(uid, "reserve-inventory", participants.DirectionForward))
		Expect(len(reserve)).To(BeNumerically(">=", 2))
		Expect(reserve[len(reserve)-1].Replayed).To(BeTrue())
		Eventually(eventsWith(o, "Warning", sagav1.ReasonRepairFailed)).WithTimeout(5 * time.Second).Should(once())
		Expect(eventsWith(o, "Warning", sagav1.ReasonRepairFailed)()[0].Note).To(ContainSubstring("a person must act"))
		// Later checks re-send it again (harmless: same key) but report nothing new.
		n := len(reserve)
		Eventually(func() int {
			return len(s.srv.Calls(participants.IdempotencyKey(uid, "reserve-inventory", participants.DirectionForward)))
		}).WithTimeout(10 * time.Second).Should(BeNumerically(">=", n+2))
		Expect(eventsWith(o, "Warning", sagav1.ReasonRepairFailed)()).To(once())
		if out := kubectl("describe", "osaga", o.Name, "--namespace", o.Namespace); out != "" {
			Expect(out).To(MatchRegexp(`Normal\s+Repaired\s+`))
			Expect(out).To(MatchRegexp(`Warning\s+RepairFailed\s+`))
		}
		for _, k := range s.srv.Keys() {
			if k != key {
				Expect(s.srv.AppliedCount(k)).To(BeNumerically("<=", 1), k)
			}
		}
	})

	It("says Unknown/QueryNotSupported, never False, when participants do not implement the state query", func() {
		s := newShop(shard, nil)
		s.srv.SetStateSupported(false)
		o := s.saga("no-query", checkedOften(sagav1.RepairRedrive))
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaSucceeded))
		s.srv.Tamper(string(o.UID), "process-payment", participants.StateNone)

		Eventually(consistent(o)).WithTimeout(10 * time.Second).Should(HaveField("Reason", sagav1.ReasonQueryNotSupported))
		c := consistent(o)()
		Expect(c.Status).To(Equal(metav1.ConditionUnknown))
		Expect(c.Message).To(ContainSubstring(`participant "payment" does not implement the state query (step "process-payment")`))
		checks := s.stateQueries(o)
		Consistently(consistent(o)).WithTimeout(3 * time.Second).Should(HaveField("Status", metav1.ConditionUnknown))
		Expect(s.stateQueries(o)).To(BeNumerically(">", checks), "it keeps checking on its interval")
		Expect(eventsWith(o, "Warning", sagav1.ReasonStepNotApplied)()).To(BeEmpty())
		Expect(s.srv.Calls(participants.IdempotencyKey(string(o.UID), "process-payment", participants.DirectionForward))).To(HaveLen(1),
			"nothing is re-driven without a verdict")
	})

	It("says Unknown/ParticipantUnreachable and backs off while a participant cannot be reached, writing nothing meanwhile", func() {
		s := newShop(shard, nil)
		o := s.saga("unreachable", checkedOften(sagav1.RepairNone))
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaSucceeded))
		setParticipantURL(s.ns, "payment", closedPortURL())

		Eventually(consistent(o)).WithTimeout(10 * time.Second).Should(HaveField("Reason", sagav1.ReasonParticipantUnreachable))
		c := consistent(o)()
		Expect(c.Status).To(Equal(metav1.ConditionUnknown))
		Expect(c.Message).To(ContainSubstring(`participant "payment" could not be asked (step "process-payment")`))

		unreachableChecks := func() float64 {
			return testutil.ToFloat64(mgr.check.Metrics.ConsistencyChecks.WithLabelValues(sagav1.ReasonParticipantUnreachable))
		}
		checks, writes := unreachableChecks(), mgr.checkWrites.Writes(o.Namespace, o.Name)
		// Four intervals: at most one more check, since it backs off from 5s.
		Consistently(func() float64 { return unreachableChecks() - checks }).
			WithTimeout(4*time.Second).Should(BeNumerically("<=", 1), "backs off from 5s")
		GinkgoWriter.Printf("checks of an unreachable participant in 4s with a 1s interval: %.0f\n", unreachableChecks()-checks)
		Expect(mgr.checkWrites.Writes(o.Namespace, o.Name)).To(Equal(writes), "no status write while the verdict stays the same")
		Expect(eventsWith(o, "Warning", sagav1.ReasonStepNotApplied)()).To(BeEmpty())

		By("the participant is back: True at the next retry")
		setParticipantURL(s.ns, "payment", s.srv.URL())
		Eventually(consistent(o)).WithTimeout(15 * time.Second).Should(HaveField("Status", metav1.ConditionTrue))
	})

	It("checks once with interval 0, and again at once when spec.consistency changes", func() {
		s := newShop(shard, nil)
		o := s.saga("once", func(o *sagav1.OrderSaga) {
			o.Spec.Consistency = &sagav1.ConsistencySpec{
				CheckAfter: &metav1.Duration{Duration: time.Second},
				Interval:   &metav1.Duration{},
			}
		})
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaSucceeded))
		Eventually(consistent(o)).WithTimeout(10 * time.Second).Should(HaveField("Status", metav1.ConditionTrue))
		n := s.stateQueries(o)
		Expect(n).To(Equal(4))
		s.srv.Tamper(string(o.UID), "send-confirmation", participants.StateCompensated)
		Consistently(func() int { return s.stateQueries(o) }).WithTimeout(2 * time.Second).Should(Equal(n))

		got := get(o)
		patch := client.MergeFrom(got.DeepCopy())
		got.Spec.Consistency.Interval = &metav1.Duration{Duration: time.Hour}
		Expect(k8sClient.Patch(suiteCtx, got, patch)).To(Succeed())
		Eventually(consistent(o)).WithTimeout(5 * time.Second).Should(HaveField("Reason", sagav1.ReasonStepNotApplied))
		Expect(consistent(o)().ObservedGeneration).To(Equal(got.Generation))
		Expect(s.stateQueries(o)).To(Equal(n + 4))
	})

	It("stops asking about a saga once it is deleted", func() {
		s := newShop(shard, nil)
		o := s.saga("deleted", checkedOften(sagav1.RepairNone))
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaSucceeded))
		Eventually(func() int { return s.stateQueries(o) }).WithTimeout(10 * time.Second).Should(BeNumerically(">=", 2*4))

		Expect(k8sClient.Delete(suiteCtx, o)).To(Succeed())
		Eventually(gone(o)).WithTimeout(10 * time.Second).Should(BeTrue())
		n := s.stateQueries(o)
		Consistently(func() int { return s.stateQueries(o) }).WithTimeout(3*time.Second).
			Should(BeNumerically("<=", n+4), "at most the check in flight")
		key := client.ObjectKeyFromObject(o).String()
		Eventually(func() bool {
			mgr.check.mu.Lock()
			defer mgr.check.mu.Unlock()
			_, ok := mgr.check.sagas[key]
			return ok
		}).WithTimeout(5*time.Second).Should(BeFalse(), "its backoff state is forgotten")
	})
})

var _ = Describe("Consistency checker under load", Label("load"), func() {
	It("paces the checks of 2000 sagas that are due at once to --consistency-qps", func() {
		const (
			n     = 2000
			qps   = 50
			burst = 4 // the worker count
		)
		shard := newShard()
		s := newShop(shard, nil)

		By("2000 sagas that ended an hour ago, created with their final status, and the participants' records of them")
		fast := rest.CopyConfig(cfg)
		fast.QPS, fast.Burst = 5000, 5000
		c, err := client.New(fast, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		ended := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
		start := time.Now()
		var wg sync.WaitGroup
		next := make(chan int)
		for range 16 {
			wg.Go(func() {
				defer GinkgoRecover()
				for i := range next {
					o := &sagav1.OrderSaga{
						ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ended-%04d", i), Namespace: s.ns,
							Labels: map[string]string{shardLabel: shard}},
						Spec: sagav1.OrderSagaSpec{
							Order: sagav1.Order{OrderID: fmt.Sprintf("%d", i), UserID: "u-42", Currency: "USD",
								Items: []sagav1.OrderItem{{SKU: "SKU-1", Quantity: 1, UnitPriceCents: 100}}},
							Steps: shopSteps(),
						},
					}
					Expect(c.Create(suiteCtx, o)).To(Succeed())
					st := &o.Status
					st.Phase, st.StartTime, st.CompletionTime = sagav1.SagaSucceeded, &ended, &ended
					for _, step := range o.Spec.Steps {
						st.Steps = append(st.Steps, sagav1.StepStatus{Name: step.Name, Phase: sagav1.StepSucceeded, Attempts: 1})
					}
					// The status Decide keeps as it is, so the saga
					// reconciler writes nothing for these sagas.
					saga.SetConditions(st, o.Generation, ended.Time, saga.Action{Kind: saga.ActionDone})
					st.ObservedGeneration = o.Generation
					Expect(c.Status().Update(suiteCtx, o)).To(Succeed())
					// The participants agree: every step applied.
					for _, step := range o.Spec.Steps {
						s.srv.Tamper(string(o.UID), step.Name, participants.StateApplied)
					}
				}
			})
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
		GinkgoWriter.Printf("created %d ended sagas in %s\n", n, time.Since(start).Round(time.Millisecond))

		By("a manager with --consistency-qps 50 starts with every check due")
		mgr := startManagerWith(shard, nil, func(r *ConsistencyReconciler) {
			r.Limiter = NewConsistencyLimiter(qps, burst)
			r.MaxConcurrentReconciles = burst
		})
		DeferCleanup(func() { mgr.Stop() })
		const window = 10 * time.Second
		queries := func() []time.Time {
			var out []time.Time
			for _, r := range s.srv.Requests() {
				if len(r.Path) > len(participants.StatePathPrefix) && r.Path[:len(participants.StatePathPrefix)] == participants.StatePathPrefix {
					out = append(out, r.Time)
				}
			}
			return out
		}
		Eventually(func() int { return len(queries()) }).WithTimeout(30 * time.Second).Should(BeNumerically(">", 0))
		first := queries()[0]
		time.Sleep(time.Until(first.Add(window)))
		times := queries()
		slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })

		// The most requests in any one-second window [t, t+1s).
		most, j := 0, 0
		for i := range times {
			for times[i].Sub(times[j]) >= time.Second {
				j++
			}
			most = max(most, i-j+1)
		}
		var inWindow int
		for _, t := range times {
			if t.Before(first.Add(window)) {
				inWindow++
			}
		}
		var list sagav1.OrderSagaList
		Expect(k8sClient.List(suiteCtx, &list, client.InNamespace(s.ns))).To(Succeed())
		checked := 0
		for _, o := range list.Items {
			if conditionStatus(&o, sagav1.ConsistentCondition) == metav1.ConditionTrue {
				checked++
			}
		}
		figure := fmt.Sprintf("%d sagas due at once, qps %d, burst %d: at most %d state queries in any 1s window; %d queries in the first %s (%.1f/s); %d sagas checked Consistent",
			n, qps, burst, most, inWindow, window, float64(inWindow)/window.Seconds(), checked)
		GinkgoWriter.Println(figure)
		AddReportEntry("consistency checks under load", figure)
		Expect(most).To(BeNumerically("<=", qps+burst))
		Expect(float64(inWindow)).To(BeNumerically(">=", 0.8*qps*window.Seconds()), "the limiter is the bottleneck, not the checker")
		Expect(checked).To(BeNumerically(">=", inWindow/4-burst))
	})
})
