package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

const (
	crashSagas = 200
	// Half the sagas order SKU-PLENTY, which never runs out; the other half
	// compete for the 60 units of SKU-HOT, so exactly 60 of them succeed and
	// 40 are refused by inventory after the order was created and paid.
	crashStock = "SKU-PLENTY=1000,SKU-HOT=60"
	hotUnits   = 60
	// Each participant call takes this long, and the manager runs this many
	// sagas at once, so the 200 sagas take several seconds and the manager
	// can be killed in the middle, with calls in flight.
	crashLatencyMs = 100
	crashWorkers   = 8
)

// crashManifest returns n OrderSagas with unique names, orders and users.
func crashManifest(n int) string {
	var b strings.Builder
	for i := range n {
		sku := "SKU-PLENTY"
		if i%2 == 1 {
			sku = "SKU-HOT"
		}
		fmt.Fprintf(&b, `---
apiVersion: saga.sagaops.io/v1alpha1
kind: OrderSaga
metadata:
  name: crash-%03d
spec:
  order:
    orderId: crash-%03d
    userId: u-crash-%03d
    currency: USD
    items:
    - {sku: %s, quantity: 1, unitPriceCents: %d}
  steps:
  - {name: create-order, participant: orders, action: create, compensation: cancel}
  - {name: process-payment, participant: payment, action: charge, compensation: refund}
  - {name: reserve-inventory, participant: inventory, action: reserve, compensation: release}
  - {name: send-confirmation, participant: notification, action: send-confirmation, compensation: send-cancellation}
`, i, i, i, sku, 1000+i)
	}
	return b.String()
}

var _ = Describe("a manager killed with SIGKILL in the middle of 200 sagas", func() {
	It("finishes every saga after a restart, without applying anything twice", func() {
		namespace := newNamespace("e2e-crash")
		svc := startShop(crashStock, fmt.Sprintf("--fault-latency-ms=%d", crashLatencyMs))
		managerArgs := []string{fmt.Sprintf("--max-concurrent-reconciles=%d", crashWorkers)}
		manager := startManager(managerArgs...)
		DeferCleanup(func() { manager.stop(30 * time.Second) })

		participants := filepath.Join(artifacts, namespace+"-participants.yaml")
		Expect(os.WriteFile(participants, []byte(svc.participantsManifest()), 0o644)).To(Succeed())
		mustKubectl("apply", "-n", namespace, "-f", participants)
		sagas := filepath.Join(artifacts, namespace+"-sagas.yaml")
		Expect(os.WriteFile(sagas, []byte(crashManifest(crashSagas)), 0o644)).To(Succeed())

		By(fmt.Sprintf("kubectl apply of %d sagas while the manager runs", crashSagas))
		applied := make(chan error, 1)
		go func() {
			defer GinkgoRecover()
			_, err := kubectl("apply", "-n", namespace, "-f", sagas)
			applied <- err
		}()

		By("kill -9 of the manager once some sagas have ended")
		var before map[string]string
		Eventually(func(g Gomega) int {
			manager.failIfExited()
			m, err := phases(namespace)
			g.Expect(err).NotTo(HaveOccurred())
			before = m
			return countTerminal(m)
		}).WithTimeout(3*time.Minute).WithPolling(100*time.Millisecond).Should(BeNumerically(">=", 10),
			"sagas ended before the kill")
		manager.kill()
		atKill, err := phases(namespace)
		Expect(err).NotTo(HaveOccurred())
		done := countTerminal(atKill)
		GinkgoWriter.Printf("killed the manager: %d sagas created, %d terminal (%d at the last look before the kill)\n",
			len(atKill), done, countTerminal(before))
		Expect(done).To(BeNumerically("<", crashSagas),
			"the manager must be killed while sagas are still running: every saga had ended; slow the participants down")
		Eventually(applied).WithTimeout(2 * time.Minute).Should(Receive(BeNil()))

		By("a new manager finishes every saga")
		manager = startManager(managerArgs...)
		var final map[string]string
		Eventually(func(g Gomega) int {
			manager.failIfExited()
			m, err := phases(namespace)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(m).To(HaveLen(crashSagas))
			final = m
			return countTerminal(m)
		}).WithTimeout(4*time.Minute).WithPolling(time.Second).Should(Equal(crashSagas), "terminal sagas")

		By("the outcomes: every SKU-PLENTY order and exactly 60 SKU-HOT orders succeed")
		outcomes := map[string]int{}
		for name, phase := range final {
			var i int
			_, err := fmt.Sscanf(name, "crash-%03d", &i)
			Expect(err).NotTo(HaveOccurred())
			sku := "SKU-PLENTY"
			if i%2 == 1 {
				sku = "SKU-HOT"
			}
			outcomes[sku+" "+phase]++
		}
		Expect(outcomes).To(Equal(map[string]int{
			"SKU-PLENTY Succeeded": crashSagas / 2,
			"SKU-HOT Succeeded":    hotUnits,
			"SKU-HOT Compensated":  crashSagas/2 - hotUnits,
		}))

		By("the books: stock and money conserved, no effect applied twice")
		expectBooksAgree(getSagas(namespace), svc.seed, svc.settledBooks())
	})
})

func countTerminal(m map[string]string) int {
	n := 0
	for _, phase := range m {
		if terminal(phase) {
			n++
		}
	}
	return n
}
