package shop

import (
	"bytes"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/sagaops/saga-operator/internal/participants"
)

// replies collects the answers per key from many goroutines.
type replies struct {
	mu    sync.Mutex
	byKey map[string][]reply
}

func (r *replies) add(key string, rep reply) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byKey[key] = append(r.byKey[key], rep)
}

// check asserts that every answer to a key is the same and returns the
// first answer per key.
func (r *replies) check(t *testing.T) map[string]reply {
	t.Helper()
	out := map[string]reply{}
	for key, reps := range r.byKey {
		for _, rep := range reps[1:] {
			if rep.status != reps[0].status || !bytes.Equal(rep.body, reps[0].body) {
				t.Fatalf("key %s answered %v and %v", key, reps[0], rep)
			}
		}
		out[key] = reps[0]
	}
	return out
}

// concurrently sends each call dup times, all at once from separate goroutines.
func concurrently(t *testing.T, h *harness, dup int, calls []func() (string, reply)) *replies {
	t.Helper()
	res := &replies{byKey: map[string][]reply{}}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, c := range calls {
		for range dup {
			wg.Go(func() {
				<-start
				key, rep := c()
				res.add(key, rep)
			})
		}
	}
	close(start)
	wg.Wait()
	return res
}

// Many goroutines, distinct and duplicate keys, forward and compensating
// calls racing for the same steps: every key gets one answer, and the
// books balance.
func TestConcurrentInventory(t *testing.T) {
	seed := map[string]int64{"SKU-1": 50, "SKU-2": 20}
	h := start(t, KindInventory, WithStock(seed))
	const sagas = 40
	var calls []func() (string, reply)
	for i := range sagas {
		o := order(fmt.Sprint(i), "u", "SKU-1", 2, 1)
		o.Items = append(o.Items, participants.Item{SKU: "SKU-2", Quantity: 1})
		req := request(fmt.Sprintf("uid-%d", i), "reserve-inventory", o)
		calls = append(calls, func() (string, reply) {
			return participants.IdempotencyKey(req.SagaUID, req.Step, participants.DirectionForward), h.fwd(ActionReserve, req)
		})
		if i%3 == 0 { // a third of the sagas compensate while the forward call is in flight
			calls = append(calls, func() (string, reply) {
				return participants.IdempotencyKey(req.SagaUID, req.Step, participants.DirectionCompensate), h.comp(ActionRelease, req)
			})
		}
	}
	first := concurrently(t, h, 3, calls).check(t)

	l := h.inventory()
	checkInventoryLedger(t, l, seed)
	var applied, rejected, refused int
	for i := range sagas {
		uid := fmt.Sprintf("uid-%d", i)
		f := first[participants.IdempotencyKey(uid, "reserve-inventory", participants.DirectionForward)]
		st := h.stepState(uid, "reserve-inventory")
		switch {
		case f.status == http.StatusOK:
			applied++
		case f.status == http.StatusConflict && errorOf(t, f).Code == CodeInsufficientStock:
			rejected++
		case f.status == http.StatusConflict && errorOf(t, f).Code == CodeAlreadyCompensated:
			refused++
		default:
			t.Fatalf("%s: forward answered %v", uid, f)
		}
		if i%3 == 0 {
			if c := first[participants.IdempotencyKey(uid, "reserve-inventory", participants.DirectionCompensate)]; c.status != http.StatusOK {
				t.Fatalf("%s: compensation answered %v", uid, c)
			}
			if st.State != participants.StateCompensated {
				t.Fatalf("%s: state %+v", uid, st)
			}
		} else if (f.status == http.StatusOK) != (st.State == participants.StateApplied) {
			t.Fatalf("%s: forward %v but state %+v", uid, f, st)
		}
	}
	if len(l.Reservations) != applied {
		t.Fatalf("%d reservations for %d applied forward calls", len(l.Reservations), applied)
	}
	// SKU-2 (20) runs out first: at most 20 reservations are live at once.
	live := 0
	for _, r := range l.Reservations {
		if r.Status == ReservationReserved {
			live++
		}
	}
	if live > 20 || live+refused+rejected+(applied-live) != sagas {
		t.Fatalf("applied %d (live %d), rejected %d, refused %d", applied, live, rejected, refused)
	}
	t.Logf("applied %d (live %d), insufficient %d, already compensated %d", applied, live, rejected, refused)
}

func TestConcurrentPayment(t *testing.T) {
	h := start(t, KindPayment, WithPaymentLimit(10_000))
	const sagas = 30
	var calls []func() (string, reply)
	reqs := make([]participants.ActionRequest, sagas)
	for i := range sagas {
		reqs[i] = request(fmt.Sprintf("uid-%d", i), "process-payment", order(fmt.Sprint(i), fmt.Sprintf("u-%d", i%2), "S", 1, 1000))
		req := reqs[i]
		calls = append(calls, func() (string, reply) {
			return participants.IdempotencyKey(req.SagaUID, req.Step, participants.DirectionForward), h.fwd(ActionCharge, req)
		})
	}
	first := concurrently(t, h, 4, calls).check(t)
	var ok, declined int
	for _, rep := range first {
		switch {
		case rep.status == http.StatusOK:
			ok++
		case rep.status == http.StatusUnprocessableEntity && errorOf(t, rep).Code == CodeCardDeclined:
			declined++
		default:
			t.Fatalf("answer %v", rep)
		}
	}
	// Two users, each with room for exactly ten charges of 1000.
	if ok != 20 || declined != 10 {
		t.Fatalf("%d charged, %d declined", ok, declined)
	}
	l := h.payments()
	checkPaymentLedger(t, l)
	if len(l.Charges) != 20 || l.OutstandingByUser["u-0"]["USD"] != 10_000 || l.OutstandingByUser["u-1"]["USD"] != 10_000 {
		t.Fatalf("ledger: %+v", l)
	}

	// Now refund every saga, twice over, concurrently.
	calls = nil
	for _, req := range reqs {
		calls = append(calls, func() (string, reply) {
			return participants.IdempotencyKey(req.SagaUID, req.Step, participants.DirectionCompensate), h.comp(ActionRefund, req)
		})
	}
	for _, rep := range concurrently(t, h, 3, calls).check(t) {
		if rep.status != http.StatusOK {
			t.Fatalf("refund answered %v", rep)
		}
	}
	l = h.payments()
	checkPaymentLedger(t, l)
	if usd := l.Totals["USD"]; usd.ChargedCents != 20_000 || usd.RefundedCents != 20_000 || len(l.Refunds) != 20 || len(l.OutstandingByUser) != 0 {
		t.Fatalf("after refunds: %+v", l)
	}
	for _, req := range reqs {
		if st := h.stepState(req.SagaUID, req.Step); st.State != participants.StateCompensated {
			t.Fatalf("%s: %+v", req.SagaUID, st)
		}
	}
}
