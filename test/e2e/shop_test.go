package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/sagaops/saga-operator/internal/participants/shop"
)

// The steps of every saga in these tests (those of config/samples).
const (
	stepCreate  = "create-order"
	stepPay     = "process-payment"
	stepReserve = "reserve-inventory"
	stepNotify  = "send-confirmation"
)

// shopServices is one cmd/participants process: the four reference services
// on free ports, over their own data directory.
type shopServices struct {
	proc *process
	// addr maps each service (orders, payment, ...) to host:port.
	addr map[string]string
	seed map[string]int64
}

var servingLine = regexp.MustCompile(`msg=serving service=(\S+) addr=(\S+)`)

// startShop starts the reference services on 127.0.0.1:0 with the stock
// seed and extra flags, reads their addresses from the log, and stops them
// when the spec ends.
func startShop(stock string, extraArgs ...string) *shopServices {
	GinkgoHelper()
	seed, err := shop.ParseStock(stock)
	Expect(err).NotTo(HaveOccurred())
	dataDir, err := os.MkdirTemp(artifacts, "participants-data-")
	Expect(err).NotTo(HaveOccurred())
	args := []string{"--data-dir", dataDir, "--stock", stock}
	for _, k := range shop.Kinds() {
		args = append(args, "--"+string(k)+"-addr", "127.0.0.1:0")
	}
	p := startProcess("participants", syscall.SIGKILL, filepath.Join(binDir, "participants"), append(args, extraArgs...)...)
	DeferCleanup(p.stop, 30*time.Second)
	s := &shopServices{proc: p, seed: seed}
	Eventually(func() map[string]string {
		p.failIfExited()
		addr := map[string]string{}
		for _, m := range servingLine.FindAllStringSubmatch(p.log(), -1) {
			addr[m[1]] = m[2]
		}
		s.addr = addr
		return addr
	}).WithTimeout(time.Minute).WithPolling(100*time.Millisecond).Should(HaveLen(len(shop.Kinds())),
		"the participants binary did not log the address of each service")
	for _, k := range shop.Kinds() {
		Expect(s.addr).To(HaveKey(string(k)))
		p.waitForHTTP(s.url(string(k))+"/healthz", 30*time.Second)
	}
	return s
}

func (s *shopServices) url(service string) string { return "http://" + s.addr[service] }

// participantsManifest returns the four Participants of the reference shop
// pointing at these services.
func (s *shopServices) participantsManifest() string {
	var b strings.Builder
	for _, k := range shop.Kinds() {
		fmt.Fprintf(&b, `---
apiVersion: saga.sagaops.io/v1alpha1
kind: Participant
metadata:
  name: %s
spec:
  url: %s
  timeout: 10s
  retry:
    maxAttempts: 8
    initialBackoff: 100ms
    maxBackoff: 2s
`, k, s.url(string(k)))
	}
	return b.String()
}

// books is what the four services' GET /admin/ledger say.
type books struct {
	orders       shop.OrdersLedger
	payment      shop.PaymentLedger
	inventory    shop.InventoryLedger
	notification shop.NotificationLedger
}

func (s *shopServices) books() (books, error) {
	var b books
	for service, into := range map[string]any{
		"orders": &b.orders, "payment": &b.payment, "inventory": &b.inventory, "notification": &b.notification,
	} {
		if err := getJSON(s.url(service)+"/admin/ledger", into); err != nil {
			return b, err
		}
	}
	return b, nil
}

// settledBooks waits until the notification outbox is delivered and
// returns the books.
func (s *shopServices) settledBooks() books {
	GinkgoHelper()
	var b books
	Eventually(func(g Gomega) {
		var err error
		b, err = s.books()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(b.notification.Pending).To(BeEmpty(), "messages still in the outbox")
	}).WithTimeout(time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())
	return b
}

var ledgerClient = &http.Client{Timeout: 10 * time.Second}

func getJSON(url string, into any) error {
	resp, err := ledgerClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return json.Unmarshal(body, into)
}

// saga is the part of an OrderSaga these tests read, decoded from
// `kubectl get -o json`: the API contract of DESIGN.md, not the Go types.
type saga struct {
	Metadata struct {
		Name string `json:"name"`
		UID  string `json:"uid"`
	} `json:"metadata"`
	Spec struct {
		Order struct {
			OrderID  string `json:"orderId"`
			UserID   string `json:"userId"`
			Currency string `json:"currency"`
			Items    []struct {
				SKU            string `json:"sku"`
				Quantity       int64  `json:"quantity"`
				UnitPriceCents int64  `json:"unitPriceCents"`
			} `json:"items"`
		} `json:"order"`
	} `json:"spec"`
	Status struct {
		Phase string `json:"phase"`
		Steps []struct {
			Name  string `json:"name"`
			Phase string `json:"phase"`
		} `json:"steps"`
	} `json:"status"`
}

func (s *saga) total() int64 {
	var t int64
	for _, it := range s.Spec.Order.Items {
		t += it.Quantity * it.UnitPriceCents
	}
	return t
}

func (s *saga) quantities() map[string]int64 {
	q := map[string]int64{}
	for _, it := range s.Spec.Order.Items {
		q[it.SKU] += it.Quantity
	}
	return q
}

func (s *saga) stepPhase(step string) string {
	for _, st := range s.Status.Steps {
		if st.Name == step {
			return st.Phase
		}
	}
	return ""
}

// getSagas reads every OrderSaga of the namespace with kubectl.
func getSagas(namespace string) []saga {
	GinkgoHelper()
	out := mustKubectl("get", "osagas", "-n", namespace, "-o", "json")
	var list struct {
		Items []saga `json:"items"`
	}
	Expect(json.Unmarshal([]byte(out), &list)).To(Succeed())
	return list.Items
}

// phases reads the phase of every OrderSaga of the namespace with kubectl
// get -o jsonpath; sagas not started yet have phase "".
func phases(namespace string) (map[string]string, error) {
	out, err := kubectl("get", "osagas", "-n", namespace, "-o",
		`jsonpath={range .items[*]}{.metadata.name}{"="}{.status.phase}{"\n"}{end}`)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if name, phase, ok := strings.Cut(line, "="); ok {
			m[name] = phase
		}
	}
	return m, nil
}

func terminal(phase string) bool {
	return phase == "Succeeded" || phase == "Compensated" || phase == "Failed"
}

// expectBooksAgree checks the services' books against the sagas' outcomes:
// every effect belongs to a saga; a Succeeded saga has exactly one order,
// one captured charge of its total, one reservation of its items and one
// confirmation; a Compensated saga has undone exactly the steps that show
// Compensated and has no effect of a step that was rejected or never ran;
// money and stock are conserved. Nothing is counted twice, so a step applied
// twice (a retry after a crash that was not idempotent) fails the check.
func expectBooksAgree(sagas []saga, seed map[string]int64, b books) {
	GinkgoHelper()
	byUID := map[string]*saga{}
	for i := range sagas {
		byUID[sagas[i].Metadata.UID] = &sagas[i]
	}
	owner := func(uid, what string) {
		GinkgoHelper()
		Expect(byUID).To(HaveKey(uid), "%s belongs to no saga of this namespace", what)
	}

	orders := bySaga(b.orders.Orders, func(o shop.Order) (string, string) { return o.SagaUID, "order " + o.OrderID }, owner)
	charges := bySaga(b.payment.Charges, func(c shop.Charge) (string, string) { return c.SagaUID, "charge " + c.PaymentID }, owner)
	refunds := bySaga(b.payment.Refunds, func(r shop.Refund) (string, string) { return r.SagaUID, "refund " + r.RefundID }, owner)
	reservations := bySaga(b.inventory.Reservations,
		func(r shop.Reservation) (string, string) { return r.SagaUID, "reservation " + r.ReservationID }, owner)
	confirmations, cancellations := map[string]int{}, map[string]int{}
	for _, m := range append(append([]shop.Message{}, b.notification.Delivered...), b.notification.Pending...) {
		owner(m.SagaUID, "message "+m.MessageID)
		switch m.Kind {
		case shop.MessageConfirmation:
			confirmations[m.SagaUID]++
		case shop.MessageCancellation:
			cancellations[m.SagaUID]++
		default:
			Fail(fmt.Sprintf("message %s has an unknown kind %q", m.MessageID, m.Kind))
		}
	}

	outstanding := map[string]int64{} // currency: total of the succeeded orders
	reserved := map[string]int64{}    // SKU: quantity of the succeeded orders
	for i := range sagas {
		s := &sagas[i]
		uid, name, cur, total := s.Metadata.UID, s.Metadata.Name, s.Spec.Order.Currency, s.total()
		switch s.Status.Phase {
		case "Succeeded":
			for _, step := range []string{stepCreate, stepPay, stepReserve, stepNotify} {
				Expect(s.stepPhase(step)).To(Equal("Succeeded"), "%s: step %s of a Succeeded saga", name, step)
			}
			Expect(orders[uid]).To(HaveLen(1), "%s: one order", name)
			Expect(orders[uid][0].Status).To(Equal(shop.OrderPending), "%s: its order", name)
			Expect(orders[uid][0].TotalCents).To(Equal(total), "%s: its order's total", name)
			Expect(charges[uid]).To(HaveLen(1), "%s: one charge", name)
			Expect(charges[uid][0].Status).To(Equal(shop.ChargeCaptured), "%s: its charge", name)
			Expect(charges[uid][0].AmountCents).To(Equal(total), "%s: the amount charged", name)
			Expect(charges[uid][0].Currency).To(Equal(cur), "%s: the currency charged", name)
			Expect(refunds[uid]).To(BeEmpty(), "%s: no refund", name)
			Expect(reservations[uid]).To(HaveLen(1), "%s: one reservation", name)
			Expect(reservations[uid][0].Status).To(Equal(shop.ReservationReserved), "%s: its reservation", name)
			got := map[string]int64{}
			for _, it := range reservations[uid][0].Items {
				got[it.SKU] += it.Quantity
			}
			Expect(got).To(Equal(s.quantities()), "%s: the quantities reserved", name)
			Expect(confirmations[uid]).To(Equal(1), "%s: one confirmation", name)
			Expect(cancellations[uid]).To(BeZero(), "%s: no cancellation", name)
			outstanding[cur] += total
			for sku, q := range s.quantities() {
				reserved[sku] += q
			}
		case "Compensated":
			// A step shows Compensated when its effect was applied and then
			// undone; a rejected (Failed) or never started (Skipped) step
			// left nothing behind.
			if s.stepPhase(stepCreate) == "Compensated" {
				Expect(orders[uid]).To(HaveLen(1), "%s: one order", name)
				Expect(orders[uid][0].Status).To(Equal(shop.OrderCancelled), "%s: its order", name)
			} else {
				Expect(orders[uid]).To(BeEmpty(), "%s: step %s is %s: no order", name, stepCreate, s.stepPhase(stepCreate))
			}
			if s.stepPhase(stepPay) == "Compensated" {
				Expect(charges[uid]).To(HaveLen(1), "%s: one charge", name)
				Expect(charges[uid][0].Status).To(Equal(shop.ChargeRefunded), "%s: its charge", name)
				Expect(refunds[uid]).To(HaveLen(1), "%s: one refund", name)
				Expect(refunds[uid][0].AmountCents).To(Equal(charges[uid][0].AmountCents), "%s: the amount refunded", name)
			} else {
				Expect(charges[uid]).To(BeEmpty(), "%s: step %s is %s: no charge", name, stepPay, s.stepPhase(stepPay))
				Expect(refunds[uid]).To(BeEmpty(), "%s: no refund", name)
			}
			if s.stepPhase(stepReserve) == "Compensated" {
				Expect(reservations[uid]).To(HaveLen(1), "%s: one reservation", name)
				Expect(reservations[uid][0].Status).To(Equal(shop.ReservationReleased), "%s: its reservation", name)
			} else {
				Expect(reservations[uid]).To(BeEmpty(), "%s: step %s is %s: no reservation", name, stepReserve, s.stepPhase(stepReserve))
			}
			if s.stepPhase(stepNotify) == "Compensated" {
				Expect(confirmations[uid]).To(Equal(1), "%s: one confirmation", name)
				Expect(cancellations[uid]).To(Equal(1), "%s: one cancellation", name)
			} else {
				Expect(confirmations[uid]).To(BeZero(), "%s: step %s is %s: no confirmation", name, stepNotify, s.stepPhase(stepNotify))
				Expect(cancellations[uid]).To(BeZero(), "%s: no cancellation", name)
			}
		default:
			Fail(fmt.Sprintf("saga %s ended %q; every saga of these tests ends Succeeded or Compensated", name, s.Status.Phase))
		}
	}

	// Money: charged − refunded (− voided) is the total of the succeeded
	// orders, per currency.
	for cur, t := range b.payment.Totals {
		Expect(t.ChargedCents-t.RefundedCents-t.VoidedCents).To(Equal(outstanding[cur]),
			"money in %s: charged %d − refunded %d − voided %d must be the total of the succeeded orders", cur, t.ChargedCents, t.RefundedCents, t.VoidedCents)
		Expect(t.OutstandingCents).To(Equal(outstanding[cur]), "outstanding %s", cur)
	}
	for cur, want := range outstanding {
		Expect(b.payment.Totals).To(HaveKey(cur), "payment totals in %s (want %d outstanding)", cur, want)
	}

	// Stock: for every SKU, available + reserved is the seed, and reserved
	// is what the succeeded orders hold.
	for sku, q := range seed {
		st, ok := b.inventory.Stock[sku]
		Expect(ok).To(BeTrue(), "inventory knows %s", sku)
		Expect(st.Available+st.Reserved).To(Equal(q), "stock of %s: available %d + reserved %d must be the seed", sku, st.Available, st.Reserved)
		Expect(st.Reserved).To(Equal(reserved[sku]), "reserved %s: the succeeded orders hold %d", sku, reserved[sku])
	}
	for sku, st := range b.inventory.Stock {
		if _, ok := seed[sku]; !ok {
			Expect(st.Reserved).To(BeZero(), "reserved %s, a SKU never stocked", sku)
		}
	}
}

// bySaga groups ledger records by the UID of their saga; owner checks that
// each record belongs to a saga of the namespace.
func bySaga[T any](records []T, id func(T) (uid, what string), owner func(uid, what string)) map[string][]T {
	out := map[string][]T{}
	for _, r := range records {
		uid, what := id(r)
		owner(uid, what)
		out[uid] = append(out[uid], r)
	}
	return out
}
