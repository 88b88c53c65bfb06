package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// sampleStock makes the samples behave as their comments say: order-1001
// (SKU-1 x2, SKU-2 x1) is in stock, SKU-RARE has 10 units for an order of
// 1000. Payment's default limit (1,000,000 cents) declines order-1003.
const sampleStock = "SKU-1=100,SKU-2=50,SKU-RARE=10,SKU-LUXURY=5"

var _ = Describe("the samples", func() {
	It("end as designed, and the services' books agree with kubectl", func() {
		namespace := newNamespace("e2e-samples")
		svc := startShop(sampleStock)
		manager := startManager()
		DeferCleanup(manager.stop, 30*time.Second)

		// The Participants point at this spec's services (the samples' own
		// point at the demo's fixed ports); then the three sample sagas, as
		// they are in config/samples.
		participants := filepath.Join(artifacts, namespace+"-participants.yaml")
		Expect(os.WriteFile(participants, []byte(svc.participantsManifest()), 0o644)).To(Succeed())
		mustKubectl("apply", "-n", namespace, "-f", participants)
		samples := filepath.Join(repoRoot, "config", "samples")
		out := mustKubectl("apply", "-n", namespace,
			"-f", filepath.Join(samples, "saga_v1alpha1_ordersaga.yaml"),
			"-f", filepath.Join(samples, "saga_v1alpha1_ordersaga_out_of_stock.yaml"),
			"-f", filepath.Join(samples, "saga_v1alpha1_ordersaga_payment_declined.yaml"))
		Expect(out).To(ContainSubstring("ordersaga.saga.sagaops.io/order-1001 created"))

		By("kubectl wait: each saga reaches the phase its sample promises")
		for name, phase := range map[string]string{
			"order-1001":                  "Succeeded",
			"order-1002-out-of-stock":     "Compensated",
			"order-1003-payment-declined": "Compensated",
		} {
			_, err := kubectl("wait", "-n", namespace, "osaga/"+name,
				"--for=jsonpath={.status.phase}="+phase, "--timeout=90s")
			Expect(err).NotTo(HaveOccurred(), "%s should end %s; kubectl describe:\n%s", name, phase, describe(namespace, name))
		}

		By("kubectl get -o jsonpath: the steps of each saga")
		stepsOf := func(name string) string {
			GinkgoHelper()
			return mustKubectl("get", "-n", namespace, "osaga", name, "-o",
				`jsonpath={range .status.steps[*]}{.name}={.phase} {end}`)
		}
		Expect(stepsOf("order-1001")).To(Equal(
			"create-order=Succeeded process-payment=Succeeded reserve-inventory=Succeeded send-confirmation=Succeeded "))
		Expect(stepsOf("order-1002-out-of-stock")).To(Equal(
			"create-order=Compensated process-payment=Compensated reserve-inventory=Failed send-confirmation=Skipped "))
		Expect(stepsOf("order-1003-payment-declined")).To(Equal(
			"create-order=Compensated process-payment=Failed reserve-inventory=Skipped send-confirmation=Skipped "))
		lastError := func(name, step string) string {
			GinkgoHelper()
			return mustKubectl("get", "-n", namespace, "osaga", name, "-o",
				`jsonpath={.status.steps[?(@.name=="`+step+`")].lastError.code}`)
		}
		Expect(lastError("order-1002-out-of-stock", stepReserve)).To(Equal("insufficient_stock"))
		Expect(lastError("order-1003-payment-declined", stepPay)).To(Equal("card_declined"))

		By("kubectl get osagas: the printer columns")
		table := mustKubectl("get", "-n", namespace, "osagas")
		rows := map[string][]string{}
		for _, line := range strings.Split(strings.TrimSpace(table), "\n")[1:] {
			f := strings.Fields(line)
			rows[f[0]] = f
		}
		Expect(rows).To(HaveLen(3), table)
		Expect(rows["order-1001"][1:3]).To(Equal([]string{"1001", "Succeeded"}), table)
		Expect(rows["order-1002-out-of-stock"][1:3]).To(Equal([]string{"1002", "Compensated"}), table)
		Expect(rows["order-1003-payment-declined"][1:3]).To(Equal([]string{"1003", "Compensated"}), table)

		By("kubectl describe: the compensation is visible")
		d := describe(namespace, "order-1002-out-of-stock")
		Expect(d).To(ContainSubstring("Compensated"))
		Expect(d).To(ContainSubstring("reserve-inventory"))
		Expect(d).To(ContainSubstring("insufficient_stock"))

		By("the books: one order paid, reserved and confirmed; the others undone")
		b := svc.settledBooks()
		expectBooksAgree(getSagas(namespace), svc.seed, b)
		status := map[string]string{}
		for _, o := range b.orders.Orders {
			status[o.OrderID] = o.Status
		}
		Expect(status).To(Equal(map[string]string{"1001": "PENDING", "1002": "CANCELLED", "1003": "CANCELLED"}))
		Expect(b.payment.Totals).To(HaveLen(1), "no EUR charge: order-1003 was declined")
		usd := b.payment.Totals["USD"]
		Expect([]int64{usd.ChargedCents, usd.RefundedCents, usd.OutstandingCents}).To(Equal([]int64{108498, 100000, 8498}))
		Expect(b.inventory.Stock["SKU-1"].Reserved).To(Equal(int64(2)))
		Expect(b.inventory.Stock["SKU-2"].Reserved).To(Equal(int64(1)))
		Expect(b.inventory.Stock["SKU-RARE"].Available).To(Equal(int64(10)))
		Expect(b.notification.Delivered).To(HaveLen(1))
		Expect(b.notification.Delivered[0].Subject).To(Equal("Order 1001 confirmed"))
	})
})

// describe returns kubectl describe of the saga, or the error.
func describe(namespace, name string) string {
	out, err := kubectl("describe", "-n", namespace, "osaga", name)
	if err != nil {
		return err.Error()
	}
	return out
}
