package shop

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagaops/saga-operator/internal/participants"
)

func TestOrders(t *testing.T) {
	h := start(t, KindOrders)
	o := order("1001", "u-42", "SKU-1", 2, 1999)
	create := request("uid-1", "create-order", o)
	if out := outputsOf(t, h.fwd(ActionCreate, create)); out["orderRef"] != "ord-1001" {
		t.Fatalf("outputs: %v", out)
	}
	l := h.orders()
	if len(l.Orders) != 1 || l.Orders[0].Status != OrderPending || l.Orders[0].TotalCents != 3998 || l.Orders[0].UserID != "u-42" {
		t.Fatalf("ledger: %+v", l)
	}
	// Another saga cannot create the same order while it is live.
	expectStatus(t, h.fwd(ActionCreate, request("uid-2", "create-order", o)), http.StatusConflict, CodeOrderExists)

	confirm := request("uid-1", "confirm-order", o)
	if out := outputsOf(t, h.fwd(ActionConfirm, confirm)); out["orderRef"] != "ord-1001" {
		t.Fatalf("confirm outputs: %v", out)
	}
	if l := h.orders(); l.Orders[0].Status != OrderConfirmed {
		t.Fatalf("after confirm: %+v", l)
	}
	expectStatus(t, h.fwd(ActionConfirm, request("uid-1", "confirm-again", o)), http.StatusConflict, CodeOrderNotPending)
	expectStatus(t, h.fwd(ActionConfirm, request("uid-1", "confirm-other", order("9", "u", "S", 1, 1))), http.StatusConflict, CodeOrderNotFound)
	expectStatus(t, h.fwd(ActionCreate, request("uid-1", "no-id", order("", "u", "S", 1, 1))), http.StatusUnprocessableEntity, CodeInvalidOrder)

	// Compensation in reverse: confirm, then create.
	outputsOf(t, h.comp(ActionCancel, confirm))
	outputsOf(t, h.comp(ActionCancel, create))
	l = h.orders()
	if l.Orders[0].Status != OrderCancelled || l.ByStatus[OrderCancelled] != 1 {
		t.Fatalf("after cancel: %+v", l)
	}
	steps := h.state("uid-1")
	if steps["create-order"].State != participants.StateCompensated || steps["confirm-order"].State != participants.StateCompensated ||
		steps["confirm-again"].State != participants.StateNone {
		t.Fatalf("states: %+v", steps)
	}
	if d := steps["create-order"].Detail; d != "order 1001 CANCELLED (ord-1001)" {
		t.Fatalf("detail: %q", d)
	}

	// A cancelled order may be created again by a new saga; compensating
	// the old saga again does not touch the new incarnation.
	outputsOf(t, h.fwd(ActionCreate, request("uid-3", "create-order", o)))
	outputsOf(t, h.callKey("late-cancel", ActionCancel, participants.DirectionCompensate, create))
	if l := h.orders(); len(l.Orders) != 1 || l.Orders[0].Status != OrderPending || l.Orders[0].SagaUID != "uid-3" {
		t.Fatalf("re-created order: %+v", l)
	}
}

func TestPaymentMoneyConserved(t *testing.T) {
	h := start(t, KindPayment, WithPaymentLimit(10_000))
	charge := func(uid string, cents int64, user string) reply {
		return h.fwd(ActionCharge, request(uid, "pay", order(uid, user, "S", 1, cents)))
	}
	if out := outputsOf(t, charge("a", 4000, "u-1")); out["paymentId"] != "pay-1" {
		t.Fatalf("outputs: %v", out)
	}
	outputsOf(t, charge("b", 6000, "u-1")) // exactly the limit
	expectStatus(t, charge("c", 1, "u-1"), http.StatusUnprocessableEntity, CodeCardDeclined)
	outputsOf(t, charge("d", 10_000, "u-2")) // limits are per user
	eur := order("e", "u-1", "S", 1, 9000)
	eur.Currency = "EUR"
	outputsOf(t, h.fwd(ActionCharge, request("e", "pay", eur))) // and per currency

	// A refund makes room again; it finds the charge by its own record.
	refund := request("a", "pay", order("a", "u-1", "S", 1, 4000))
	refund.Outputs = map[string]map[string]string{"pay": {"paymentId": "pay-1"}}
	if out := outputsOf(t, h.comp(ActionRefund, refund)); out["refundId"] != "ref-1" {
		t.Fatalf("refund outputs: %v", out)
	}
	outputsOf(t, charge("c2", 4000, "u-1"))

	l := h.payments()
	usd := l.Totals["USD"]
	if usd.ChargedCents != 24_000 || usd.RefundedCents != 4000 || usd.OutstandingCents != 20_000 || usd.Charges != 4 {
		t.Fatalf("USD totals: %+v", usd)
	}
	if usd.ChargedCents != usd.RefundedCents+usd.VoidedCents+usd.OutstandingCents {
		t.Fatalf("money not conserved: %+v", usd)
	}
	if l.OutstandingByUser["u-1"]["USD"] != 10_000 || l.OutstandingByUser["u-2"]["USD"] != 10_000 || l.OutstandingByUser["u-1"]["EUR"] != 9000 {
		t.Fatalf("outstanding: %+v", l.OutstandingByUser)
	}
	if len(l.Refunds) != 1 || l.Refunds[0].PaymentID != "pay-1" || l.Refunds[0].AmountCents != 4000 {
		t.Fatalf("refunds: %+v", l.Refunds)
	}
	if l.Charges[0].Status != ChargeRefunded || l.Charges[0].RefundID != "ref-1" {
		t.Fatalf("charge: %+v", l.Charges[0])
	}
	checkPaymentLedger(t, l)

	// Negative totals are refused; no limit when the limit is 0.
	expectStatus(t, charge("neg", -1, "u-3"), http.StatusUnprocessableEntity, CodeInvalidOrder)
	un := start(t, KindPayment, WithPaymentLimit(0))
	outputsOf(t, un.fwd(ActionCharge, request("big", "pay", order("big", "u", "S", 1, 1<<40))))
}

// checkPaymentLedger checks the payment books add up.
func checkPaymentLedger(t *testing.T, l PaymentLedger) {
	t.Helper()
	byUser := map[string]map[string]int64{}
	totals := map[string]MoneyTotals{}
	for _, ch := range l.Charges {
		tt := totals[ch.Currency]
		tt.ChargedCents += ch.AmountCents
		switch ch.Status {
		case ChargeCaptured:
			if byUser[ch.UserID] == nil {
				byUser[ch.UserID] = map[string]int64{}
			}
			byUser[ch.UserID][ch.Currency] += ch.AmountCents
			tt.OutstandingCents += ch.AmountCents
		case ChargeRefunded:
			tt.RefundedCents += ch.AmountCents
		}
		totals[ch.Currency] = tt
	}
	var refunded int64
	for _, rf := range l.Refunds {
		refunded += rf.AmountCents
	}
	var refundedTotal int64
	for cur, tt := range l.Totals {
		if tt.ChargedCents != tt.RefundedCents+tt.VoidedCents+tt.OutstandingCents {
			t.Fatalf("%s: money not conserved: %+v", cur, tt)
		}
		if totals[cur].OutstandingCents != tt.OutstandingCents || totals[cur].RefundedCents != tt.RefundedCents {
			t.Fatalf("%s: totals %+v, recomputed %+v", cur, tt, totals[cur])
		}
		refundedTotal += tt.RefundedCents
	}
	if refunded != refundedTotal {
		t.Fatalf("refund records sum to %d, totals say %d", refunded, refundedTotal)
	}
	if fmt.Sprint(byUser) != fmt.Sprint(l.OutstandingByUser) {
		t.Fatalf("outstanding by user %v, recomputed %v", l.OutstandingByUser, byUser)
	}
}

func TestInventoryStockConserved(t *testing.T) {
	seed := map[string]int64{"SKU-1": 10, "SKU-2": 3}
	h := start(t, KindInventory, WithStock(seed))
	o := order("1", "u", "SKU-1", 2, 100)
	o.Items = append(o.Items, participants.Item{SKU: "SKU-2", Quantity: 1}, participants.Item{SKU: "SKU-1", Quantity: 1})
	if out := outputsOf(t, h.fwd(ActionReserve, request("a", "res", o))); out["reservationId"] != "res-1" {
		t.Fatalf("outputs: %v", out)
	}
	l := h.inventory()
	if l.Stock["SKU-1"] != (StockLevel{7, 3}) || l.Stock["SKU-2"] != (StockLevel{2, 1}) {
		t.Fatalf("stock: %+v", l.Stock)
	}
	if r := l.Reservations[0]; len(r.Items) != 2 || r.Items[0] != (ReservedItem{"SKU-1", 3}) || r.Items[1] != (ReservedItem{"SKU-2", 1}) {
		t.Fatalf("reservation: %+v", r)
	}
	if d := h.stepState("a", "res").Detail; d != "reserved SKU-1 x3, SKU-2 x1 (res-1)" {
		t.Fatalf("detail: %q", d)
	}
	// All or nothing: SKU-1 is there, SKU-2 is short, so nothing is reserved.
	short := order("2", "u", "SKU-1", 1, 100)
	short.Items = append(short.Items, participants.Item{SKU: "SKU-2", Quantity: 3})
	expectStatus(t, h.fwd(ActionReserve, request("b", "res", short)), http.StatusConflict, CodeInsufficientStock)
	// Unknown SKUs have no stock.
	r := h.fwd(ActionReserve, request("c", "res", order("3", "u", "SKU-404", 1, 1)))
	expectStatus(t, r, http.StatusConflict, CodeInsufficientStock)
	if !strings.Contains(errorOf(t, r).Message, "SKU-404: need 1, available 0") {
		t.Fatalf("message: %s", r.body)
	}
	expectStatus(t, h.fwd(ActionReserve, request("d", "res", order("4", "u", "SKU-1", 0, 1))), http.StatusUnprocessableEntity, CodeInvalidOrder)
	if l := h.inventory(); l.Stock["SKU-1"] != (StockLevel{7, 3}) || len(l.Reservations) != 1 {
		t.Fatalf("a rejection changed the stock: %+v", l)
	}
	outputsOf(t, h.fwd(ActionReserve, request("e", "res", order("5", "u", "SKU-1", 7, 1))))
	outputsOf(t, h.comp(ActionRelease, request("a", "res", o)))
	l = h.inventory()
	if l.Stock["SKU-1"] != (StockLevel{3, 7}) || l.Stock["SKU-2"] != (StockLevel{3, 0}) {
		t.Fatalf("after release: %+v", l.Stock)
	}
	checkInventoryLedger(t, l, seed)

	// Reopening with another seed keeps the stored levels, adds new SKUs.
	h.opts = []Option{WithStock(map[string]int64{"SKU-1": 1000, "SKU-3": 4})}
	h.reopen()
	l = h.inventory()
	if l.Stock["SKU-1"] != (StockLevel{3, 7}) || l.Stock["SKU-3"] != (StockLevel{4, 0}) {
		t.Fatalf("after reopen: %+v", l.Stock)
	}
}

// checkInventoryLedger checks available + reserved equals the seed and
// reserved equals the live reservations.
func checkInventoryLedger(t *testing.T, l InventoryLedger, seed map[string]int64) {
	t.Helper()
	reserved := map[string]int64{}
	for _, r := range l.Reservations {
		if r.Status == ReservationReserved {
			for _, it := range r.Items {
				reserved[it.SKU] += it.Quantity
			}
		}
	}
	for sku, q := range seed {
		s := l.Stock[sku]
		if s.Available+s.Reserved != q || s.Available < 0 || s.Reserved != reserved[sku] {
			t.Fatalf("%s: %+v, seed %d, reservations hold %d", sku, s, q, reserved[sku])
		}
	}
	if len(l.Stock) != len(seed) {
		t.Fatalf("stock has SKUs beyond the seed: %+v", l.Stock)
	}
}

// webhook records deliveries and fails every third request.
type webhook struct {
	mu       sync.Mutex
	n        int
	accepted map[string]int
	bodies   map[string]Message
}

func (wh *webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	wh.mu.Lock()
	defer wh.mu.Unlock()
	wh.n++
	if wh.n%3 == 0 {
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	var m Message
	_ = json.Unmarshal(b, &m)
	if id := r.Header.Get(participants.HeaderIdempotencyKey); id != m.MessageID {
		http.Error(w, "key "+id+" is not the message id "+m.MessageID, http.StatusBadRequest)
		return
	}
	wh.accepted[m.MessageID]++
	wh.bodies[m.MessageID] = m
	w.WriteHeader(http.StatusNoContent)
}

// The transactional outbox: every message written with a step is delivered
// exactly once to the delivered bucket despite injected delivery faults and
// a failing webhook.
func TestOutboxDelivery(t *testing.T) {
	wh := &webhook{accepted: map[string]int{}, bodies: map[string]Message{}}
	whs := httptest.NewServer(wh)
	defer whs.Close()
	h := start(t, KindNotification, WithDeliveryFaultRate(0.4), WithSeed(42),
		WithWebhook(whs.URL, nil), WithDispatchTiming(20*time.Millisecond, 2*time.Millisecond, 20*time.Millisecond))
	const sagas, cancelled = 20, 6
	reqs := make([]participants.ActionRequest, sagas)
	for i := range reqs {
		reqs[i] = request(fmt.Sprintf("uid-%d", i), "send-confirmation", order(fmt.Sprint(i), fmt.Sprintf("u-%d", i), "S", 1, 100))
		outputsOf(t, h.fwd(ActionSendConfirmation, reqs[i]))
	}
	if l := h.notifications(); len(l.Pending) != sagas || len(l.Delivered) != 0 {
		t.Fatalf("before the dispatcher runs: %d pending, %d delivered", len(l.Pending), len(l.Delivered))
	}
	if d := h.stepState("uid-0", "send-confirmation").Detail; d != "confirmation msg-1 to u-0 queued, delivery pending" {
		t.Fatalf("detail before delivery: %q", d)
	}
	if err := h.svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Start(t.Context()); err == nil {
		t.Fatal("second Start succeeded")
	}
	for i := 0; i < cancelled; i++ {
		out := outputsOf(t, h.comp(ActionSendCancellation, reqs[i]))
		if out["messageId"] == "" {
			t.Fatalf("cancellation outputs: %v", out)
		}
	}
	var l NotificationLedger
	eventually(t, 20*time.Second, "the outbox to drain", func() bool {
		l = h.notifications()
		return len(l.Pending) == 0 && len(l.Delivered) == sagas+cancelled
	})
	seen := map[string]bool{}
	var retried int
	for _, m := range l.Delivered {
		if seen[m.MessageID] {
			t.Fatalf("message %s delivered twice", m.MessageID)
		}
		seen[m.MessageID] = true
		if m.DeliveredAt == nil || m.Attempts < 1 {
			t.Fatalf("delivered message %+v", m)
		}
		if m.Attempts > 1 {
			retried++
		}
		wh.mu.Lock()
		n := wh.accepted[m.MessageID]
		wh.mu.Unlock()
		if n != 1 {
			t.Fatalf("webhook accepted %s %d times", m.MessageID, n)
		}
	}
	if retried == 0 {
		t.Fatal("no delivery was retried: the faults did not fire")
	}
	wh.mu.Lock()
	if len(wh.accepted) != sagas+cancelled {
		t.Fatalf("webhook accepted %d messages", len(wh.accepted))
	}
	if m := wh.bodies["msg-1"]; m.Kind != MessageConfirmation || m.To != "u-0" || m.Subject != "Order 0 confirmed" {
		t.Fatalf("webhook body: %+v", m)
	}
	wh.mu.Unlock()
	var kinds = map[string]int{}
	for _, m := range l.Delivered {
		kinds[m.Kind]++
	}
	if kinds[MessageConfirmation] != sagas || kinds[MessageCancellation] != cancelled {
		t.Fatalf("kinds: %v", kinds)
	}
	st := h.stepState("uid-0", "send-confirmation")
	if st.State != participants.StateCompensated || !strings.HasPrefix(st.Detail, "cancellation msg-") || !strings.Contains(st.Detail, "delivered at") {
		t.Fatalf("compensated step: %+v", st)
	}
	st = h.stepState(fmt.Sprintf("uid-%d", sagas-1), "send-confirmation")
	if st.State != participants.StateApplied || !strings.Contains(st.Detail, "delivered at") {
		t.Fatalf("applied step: %+v", st)
	}
	h.svc.Stop()
	h.svc.Stop()

	// Messages written while stopped wait in the outbox, survive a reopen,
	// and go out once the dispatcher runs again.
	outputsOf(t, h.fwd(ActionSendConfirmation, request("late", "send-confirmation", order("late", "u-late", "S", 1, 1))))
	h.reopen()
	if l := h.notifications(); len(l.Pending) != 1 {
		t.Fatalf("pending after reopen: %+v", l.Pending)
	}
	if err := h.svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the late message", func() bool {
		l = h.notifications()
		return len(l.Pending) == 0 && len(l.Delivered) == sagas+cancelled+1
	})
}

func TestOutboxBackoff(t *testing.T) {
	h := start(t, KindNotification, WithDeliveryFaultRate(1),
		WithDispatchTiming(time.Second, 10*time.Millisecond, 80*time.Millisecond))
	outputsOf(t, h.fwd(ActionSendConfirmation, request("u", "n", order("1", "u-1", "S", 1, 1))))
	if err := h.svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var l NotificationLedger
	eventually(t, 10*time.Second, "five failed attempts", func() bool {
		l = h.notifications()
		return len(l.Pending) == 1 && l.Pending[0].Attempts >= 5
	})
	m := l.Pending[0]
	if m.LastError != "injected delivery fault" || m.NextAttemptAt == nil {
		t.Fatalf("pending message: %+v", m)
	}
	if d := h.stepState("u", "n").Detail; !strings.Contains(d, "failed attempts, last: injected delivery fault") {
		t.Fatalf("detail: %q", d)
	}
	if err := h.svc.SetDeliveryFaultRate(0); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "delivery", func() bool {
		l = h.notifications()
		return len(l.Pending) == 0 && len(l.Delivered) == 1
	})
	// The backoff is capped and jittered.
	d := h.svc.disp
	for attempts := 1; attempts < 40; attempts++ {
		b := d.backoff(attempts)
		if b < 5*time.Millisecond || b > 80*time.Millisecond {
			t.Fatalf("backoff(%d) = %v", attempts, b)
		}
	}
}

func TestTamper(t *testing.T) {
	t.Run("payment void, then redrive with the forgotten key", func(t *testing.T) {
		h := start(t, KindPayment)
		req := request("uid-1", "pay", order("1", "u-1", "S", 1, 500))
		first := h.fwd(ActionCharge, req)
		r := h.tamper(TamperRequest{SagaUID: "uid-1", Step: "pay", Op: OpVoid})
		if r.status != http.StatusOK {
			t.Fatalf("tamper: %v", r)
		}
		var tr TamperResponse
		_ = json.Unmarshal(r.body, &tr)
		if tr.State != participants.StateNone || tr.ForgottenKey != "" {
			t.Fatalf("tamper answer: %+v", tr)
		}
		l := h.payments()
		if l.Charges[0].Status != ChargeVoided || l.Totals["USD"].VoidedCents != 500 || len(l.OutstandingByUser) != 0 {
			t.Fatalf("after void: %+v", l)
		}
		checkPaymentLedger(t, l)
		if st := h.stepState("uid-1", "pay"); st.State != participants.StateNone || !strings.Contains(st.Detail, "voided") {
			t.Fatalf("state: %+v", st)
		}
		// The key is kept: a re-send replays and repairs nothing.
		sameReply(t, first, h.fwd(ActionCharge, req))
		if st := h.stepState("uid-1", "pay"); st.State != participants.StateNone {
			t.Fatalf("state after replay: %+v", st)
		}
		// Forget the key too (a restore from backup): the re-send applies again.
		r = h.tamper(TamperRequest{SagaUID: "uid-1", Step: "pay", Op: OpForgetKey})
		_ = json.Unmarshal(r.body, &tr)
		if r.status != http.StatusOK || tr.ForgottenKey != "uid-1:pay:forward" {
			t.Fatalf("forget-key: %v", r)
		}
		again := h.fwd(ActionCharge, req)
		if again.replayed() || outputsOf(t, again)["paymentId"] != "pay-2" {
			t.Fatalf("redrive: %v", again)
		}
		if st := h.stepState("uid-1", "pay"); st.State != participants.StateApplied {
			t.Fatalf("state after redrive: %+v", st)
		}
		// The refund undoes the new charge only.
		outputsOf(t, h.comp(ActionRefund, req))
		l = h.payments()
		if l.Totals["USD"] != (MoneyTotals{Charges: 2, ChargedCents: 1000, RefundedCents: 500, VoidedCents: 500}) {
			t.Fatalf("totals: %+v", l.Totals)
		}
		checkPaymentLedger(t, l)
	})
	t.Run("inventory drop with forgetKey", func(t *testing.T) {
		seed := map[string]int64{"S": 5}
		h := start(t, KindInventory, WithStock(seed))
		req := request("uid-1", "res", order("1", "u", "S", 2, 1))
		outputsOf(t, h.fwd(ActionReserve, req))
		if r := h.tamper(TamperRequest{SagaUID: "uid-1", Step: "res", Op: OpDrop, ForgetKey: true}); r.status != http.StatusOK {
			t.Fatalf("tamper: %v", r)
		}
		l := h.inventory()
		if l.Stock["S"] != (StockLevel{5, 0}) || l.Reservations[0].Status != ReservationDropped {
			t.Fatalf("after drop: %+v", l)
		}
		checkInventoryLedger(t, l, seed)
		if r := h.fwd(ActionReserve, req); r.replayed() || outputsOf(t, r)["reservationId"] != "res-2" {
			t.Fatalf("redrive: %v", r)
		}
		checkInventoryLedger(t, h.inventory(), seed)
		// void is payment's word.
		expectStatus(t, h.tamper(TamperRequest{SagaUID: "uid-1", Step: "res", Op: OpVoid}), http.StatusBadRequest, CodeBadRequest)
	})
	t.Run("orders drop", func(t *testing.T) {
		h := start(t, KindOrders)
		req := request("uid-1", "create-order", order("1", "u", "S", 1, 1))
		outputsOf(t, h.fwd(ActionCreate, req))
		if r := h.tamper(TamperRequest{SagaUID: "uid-1", Step: "create-order", Op: OpDrop}); r.status != http.StatusOK {
			t.Fatalf("tamper: %v", r)
		}
		if l := h.orders(); len(l.Orders) != 0 {
			t.Fatalf("after drop: %+v", l)
		}
		if st := h.stepState("uid-1", "create-order"); st.State != participants.StateNone {
			t.Fatalf("state: %+v", st)
		}
		// Compensating a dropped step is a tombstone.
		outputsOf(t, h.comp(ActionCancel, req))
		if st := h.stepState("uid-1", "create-order"); st.State != participants.StateCompensated {
			t.Fatalf("state: %+v", st)
		}
	})
	t.Run("notification drop", func(t *testing.T) {
		h := start(t, KindNotification)
		req := request("uid-1", "n", order("1", "u", "S", 1, 1))
		outputsOf(t, h.fwd(ActionSendConfirmation, req))
		if r := h.tamper(TamperRequest{SagaUID: "uid-1", Step: "n", Op: OpDrop}); r.status != http.StatusOK {
			t.Fatalf("tamper: %v", r)
		}
		if l := h.notifications(); len(l.Pending)+len(l.Delivered) != 0 {
			t.Fatalf("after drop: %+v", l)
		}
	})
	t.Run("forget-key alone is harmless", func(t *testing.T) {
		h := start(t, KindPayment)
		req := request("uid-1", "pay", order("1", "u-1", "S", 1, 500))
		first := h.fwd(ActionCharge, req)
		if r := h.tamper(TamperRequest{SagaUID: "uid-1", Step: "pay", Op: OpForgetKey}); r.status != http.StatusOK {
			t.Fatalf("tamper: %v", r)
		}
		again := h.fwd(ActionCharge, req)
		if again.replayed() || string(again.body) != string(first.body) {
			t.Fatalf("re-send: %v", again)
		}
		if l := h.payments(); len(l.Charges) != 1 {
			t.Fatalf("second charge: %+v", l.Charges)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		h := start(t, KindPayment)
		expectStatus(t, h.tamper(TamperRequest{SagaUID: "nope", Step: "pay", Op: OpVoid}), http.StatusNotFound, CodeNotFound)
		expectStatus(t, h.tamper(TamperRequest{SagaUID: "nope", Op: OpVoid}), http.StatusBadRequest, CodeBadRequest)
		req := request("uid-1", "pay", order("1", "u-1", "S", 1, 500))
		outputsOf(t, h.comp(ActionRefund, req))
		expectStatus(t, h.tamper(TamperRequest{SagaUID: "uid-1", Step: "pay", Op: OpVoid}), http.StatusConflict, CodeNotApplied)
		outputsOf(t, h.fwd(ActionCharge, request("uid-2", "pay", order("2", "u-1", "S", 1, 500))))
		expectStatus(t, h.tamper(TamperRequest{SagaUID: "uid-2", Step: "pay", Op: "explode"}), http.StatusBadRequest, CodeBadRequest)
		if r := h.raw(http.MethodPost, "/admin/tamper", []byte(`{"sagaUid":"uid-2","step":"pay","op":"void","extra":1}`), nil); r.status != http.StatusBadRequest {
			t.Fatalf("unknown field: %v", r)
		}
		if l := h.payments(); l.Charges[0].Status != ChargeCaptured {
			t.Fatalf("a refused tamper changed the charge: %+v", l.Charges)
		}
	})
}

func TestParseStock(t *testing.T) {
	m, err := ParseStock("SKU-1=100, SKU-2=50\n# comment\nSKU-3 = 0\n\n")
	if err != nil || len(m) != 3 || m["SKU-1"] != 100 || m["SKU-2"] != 50 || m["SKU-3"] != 0 {
		t.Fatalf("%v %v", m, err)
	}
	if m, err := ParseStock(""); err != nil || len(m) != 0 {
		t.Fatalf("empty: %v %v", m, err)
	}
	for _, bad := range []string{"SKU-1", "=5", "S=-1", "S=x", "S=1,S=2"} {
		if _, err := ParseStock(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	dir := t.TempDir()
	js := filepath.Join(dir, "stock.json")
	_ = os.WriteFile(js, []byte(` {"SKU-1": 7, "SKU-9": 1}`), 0o600)
	if m, err := LoadStockFile(js); err != nil || m["SKU-1"] != 7 || m["SKU-9"] != 1 {
		t.Fatalf("json: %v %v", m, err)
	}
	txt := filepath.Join(dir, "stock.txt")
	_ = os.WriteFile(txt, []byte("SKU-1=7\nSKU-2=8\n"), 0o600)
	if m, err := LoadStockFile(txt); err != nil || m["SKU-2"] != 8 {
		t.Fatalf("text: %v %v", m, err)
	}
	_ = os.WriteFile(js, []byte(`{"SKU-1": -7}`), 0o600)
	if _, err := LoadStockFile(js); err == nil {
		t.Fatal("negative JSON stock accepted")
	}
	if _, err := LoadStockFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}
