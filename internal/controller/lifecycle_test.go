package controller

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
	"github.com/sagaops/saga-operator/internal/participants/participanttest"
)

func gone(o *sagav1.OrderSaga) func() bool {
	return func() bool {
		err := k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(o), &sagav1.OrderSaga{})
		return err != nil && client.IgnoreNotFound(err) == nil
	}
}

var _ = Describe("OrderSaga lifecycle", func() {
	var shard string
	BeforeEach(func() {
		shard = newShard()
		runManager(shard, nil)
	})

	It("deletes an ended saga after ttlSecondsAfterFinished", func() {
		s := newShop(shard, nil)
		o := s.saga("ttl", func(o *sagav1.OrderSaga) {
			ttl := int32(1)
			o.Spec.TTLSecondsAfterFinished = &ttl
		})
		Eventually(gone(o)).WithTimeout(30 * time.Second).Should(BeTrue())
		Expect(s.srv.StepState(string(o.UID), "send-confirmation")).To(Equal("applied"))
	})

	It("removes an unfinished saga at once with deletionPolicy Orphan, compensating nothing", func() {
		s := newShop(shard, nil)
		s.srv.SetBehavior("reserve", participanttest.Behavior{Hang: true})
		o := s.saga("orphan", func(o *sagav1.OrderSaga) { o.Spec.DeletionPolicy = sagav1.DeletionPolicyOrphan })
		Eventually(func() string { return get(o).Status.CurrentStep }).WithTimeout(30 * time.Second).Should(Equal("reserve-inventory"))
		Expect(get(o).Finalizers).To(ContainElement(sagav1.Finalizer))
		Expect(k8sClient.Delete(suiteCtx, o)).To(Succeed())
		Eventually(gone(o)).WithTimeout(30 * time.Second).Should(BeTrue())
		Expect(s.srv.StepState(string(o.UID), "process-payment")).To(Equal("applied"))
		Expect(s.calls(o)).NotTo(ContainElement("refund/compensate"))
	})

	It("starts no new call while suspended and resumes when unsuspended", func() {
		s := newShop(shard, nil)
		o := s.saga("suspended", func(o *sagav1.OrderSaga) { o.Spec.Suspend = true })
		Eventually(func() string {
			return conditionReason(get(o), sagav1.ReconcilingCondition)
		}).WithTimeout(30 * time.Second).Should(Equal(sagav1.ReasonSuspended))
		Consistently(func() []string { return s.calls(o) }).WithTimeout(time.Second).Should(BeEmpty())

		got := get(o)
		patch := client.MergeFrom(got.DeepCopy())
		got.Spec.Suspend = false
		Expect(k8sClient.Patch(suiteCtx, got, patch)).To(Succeed())
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaSucceeded))
	})

	It("compensates when the deadline passes", func() {
		s := newShop(shard, nil)
		s.srv.SetBehavior("reserve", participanttest.Behavior{Hang: true})
		o := s.saga("deadline", func(o *sagav1.OrderSaga) {
			o.Spec.Deadline = &metav1.Duration{Duration: 2 * time.Second}
		})
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaCompensated))
		Expect(get(o).Status.CompensationReason).To(Equal(sagav1.ReasonDeadlineExceeded))
		Expect(s.srv.StepState(string(o.UID), "process-payment")).To(Equal("compensated"))
	})

	It("sends the bearer token of the referenced Secret, and waits for a missing Secret", func() {
		s := newShop(shard, func(p *sagav1.ParticipantSpec) {
			p.Auth = &sagav1.ParticipantAuth{BearerTokenSecretRef: &sagav1.SecretKeySelector{Name: "shop-token", Key: "token"}}
		})
		s.srv.RequireBearer("s3cret")
		o := s.saga("auth", nil)
		Eventually(func() string {
			got := get(o)
			if conditionStatus(got, sagav1.StalledCondition) != metav1.ConditionTrue {
				return ""
			}
			return conditionReason(got, sagav1.StalledCondition)
		}).WithTimeout(30 * time.Second).Should(Equal(sagav1.ReasonCredentialsNotFound))
		// Nothing was sent, so no attempt is spent while the Secret is missing.
		Consistently(func() int32 { return get(o).Status.Attempts }).WithTimeout(2 * time.Second).Should(BeNumerically("<=", 1))
		Expect(s.calls(o)).To(BeEmpty())

		Expect(k8sClient.Create(suiteCtx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "shop-token", Namespace: s.ns},
			StringData: map[string]string{"token": "s3cret"},
		})).To(Succeed())
		Eventually(phaseOf(o)).WithTimeout(30 * time.Second).Should(Equal(sagav1.SagaSucceeded))
		for _, r := range s.srv.Requests() {
			if r.Body.SagaUID == string(o.UID) {
				Expect(r.Authorization).To(Equal("Bearer s3cret"))
			}
		}
	})
})

func conditionReason(o *sagav1.OrderSaga, t string) string {
	for _, c := range o.Status.Conditions {
		if c.Type == t {
			return c.Reason
		}
	}
	return ""
}
