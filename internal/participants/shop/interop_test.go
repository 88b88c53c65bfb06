package shop_test

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
	"github.com/sagaops/saga-operator/internal/participants"
	"github.com/sagaops/saga-operator/internal/participants/shop"
	"github.com/sagaops/saga-operator/internal/saga"
)

// shopFixture serves the four services and calls them with the operator's
// own client, as a saga would.
type shopFixture struct {
	t      *testing.T
	client *participants.Client
	svcs   map[shop.Kind]*shop.Service
	eps    map[shop.Kind]participants.Endpoint
}

func newShop(t *testing.T, stock map[string]int64) *shopFixture {
	t.Helper()
	f := &shopFixture{t: t, client: participants.NewClient(participants.ClientOptions{}),
		svcs: map[shop.Kind]*shop.Service{}, eps: map[shop.Kind]participants.Endpoint{}}
	dir := t.TempDir()
	for _, k := range shop.Kinds() {
		svc, err := shop.Open(k, filepath.Join(dir, string(k)+".db"), shop.WithNoSync(true), shop.WithStock(stock))
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(svc)
		t.Cleanup(func() { srv.Close(); _ = svc.Close() })
		f.svcs[k] = svc
		f.eps[k] = participants.Endpoint{Name: string(k), URL: srv.URL}
	}
	return f
}

type step struct {
	name, action, compensation string
	kind                       shop.Kind
}

var shopSteps = []step{
	{"create-order", shop.ActionCreate, shop.ActionCancel, shop.KindOrders},
	{"process-payment", shop.ActionCharge, shop.ActionRefund, shop.KindPayment},
	{"reserve-inventory", shop.ActionReserve, shop.ActionRelease, shop.KindInventory},
	{"send-confirmation", shop.ActionSendConfirmation, shop.ActionSendCancellation, shop.KindNotification},
}

func (f *shopFixture) call(uid string, s step, dir sagav1.Direction, o sagav1.Order, outputs map[string]map[string]string) saga.Result {
	f.t.Helper()
	action := s.action
	if dir == sagav1.Compensate {
		action = s.compensation
	}
	return f.client.Call(context.Background(), f.eps[s.kind], participants.CallRequest{
		SagaNamespace: "shop", SagaName: "order-" + o.OrderID, SagaUID: uid, Step: s.name,
		Action: action, Direction: dir, Attempt: 1, Order: o, Outputs: outputs,
	})
}

func (f *shopFixture) state(uid string, s step) string {
	f.t.Helper()
	states, err := f.client.State(context.Background(), f.eps[s.kind], uid)
	if err != nil {
		f.t.Fatal(err)
	}
	if st, ok := states[s.name]; ok {
		return st.State
	}
	return participants.StateNone
}

func shopOrder(id, sku string, qty int32) sagav1.Order {
	return sagav1.Order{OrderID: id, UserID: "u-42", Currency: "USD",
		Items: []sagav1.OrderItem{{SKU: sku, Quantity: qty, UnitPriceCents: 1999}}}
}

// A saga run the way the operator runs it: forward in order; on a
// rejection, compensate the steps before it in reverse.
func TestInteropWithProtocolClient(t *testing.T) {
	f := newShop(t, map[string]int64{"SKU-1": 3})

	ok := shopOrder("1001", "SKU-1", 2)
	outputs := map[string]map[string]string{}
	for _, s := range shopSteps {
		res := f.call("uid-ok", s, sagav1.Forward, ok, outputs)
		if res.Outcome != saga.OutcomeOK {
			t.Fatalf("%s: %+v %+v", s.name, res, res.Error)
		}
		outputs[s.name] = res.Outputs
	}
	if outputs["create-order"]["orderRef"] != "ord-1001" || outputs["process-payment"]["paymentId"] != "pay-1" {
		t.Fatalf("outputs: %v", outputs)
	}
	for _, s := range shopSteps {
		if st := f.state("uid-ok", s); st != participants.StateApplied {
			t.Fatalf("%s: %s", s.name, st)
		}
	}

	// Only one SKU-1 left: the reservation is rejected, the saga compensates.
	short := shopOrder("1002", "SKU-1", 2)
	outputs = map[string]map[string]string{}
	var failedAt int
	for i, s := range shopSteps {
		res := f.call("uid-short", s, sagav1.Forward, short, outputs)
		if res.Outcome == saga.OutcomeRejected {
			if res.Error == nil || res.Error.Code != shop.CodeInsufficientStock {
				t.Fatalf("%s: %+v", s.name, res.Error)
			}
			failedAt = i
			break
		}
		if res.Outcome != saga.OutcomeOK {
			t.Fatalf("%s: %+v", s.name, res)
		}
		outputs[s.name] = res.Outputs
	}
	if failedAt != 2 {
		t.Fatalf("failed at step %d", failedAt)
	}
	for i := failedAt - 1; i >= 0; i-- {
		if res := f.call("uid-short", shopSteps[i], sagav1.Compensate, short, outputs); res.Outcome != saga.OutcomeOK {
			t.Fatalf("compensate %s: %+v", shopSteps[i].name, res)
		}
	}
	want := []string{participants.StateCompensated, participants.StateCompensated, participants.StateNone, participants.StateNone}
	for i, s := range shopSteps {
		if st := f.state("uid-short", s); st != want[i] {
			t.Fatalf("%s: %s, want %s", s.name, st, want[i])
		}
	}
	l, _ := f.svcs[shop.KindPayment].Ledger()
	if tot := l.(*shop.PaymentLedger).Totals["USD"]; tot.ChargedCents != 2*3998 || tot.RefundedCents != 3998 {
		t.Fatalf("payment totals: %+v", tot)
	}

	// Faults as the client sees them: a 503 and a lost reply are
	// transient; the retry with the same key gets the committed answer.
	pay := shopSteps[1]
	if err := f.svcs[shop.KindPayment].SetFault(shop.ActionCharge, shop.Fault{TransientRate: 1}); err != nil {
		t.Fatal(err)
	}
	if res := f.call("uid-faults", pay, sagav1.Forward, ok, nil); res.Outcome != saga.OutcomeTransient {
		t.Fatalf("503: %+v", res)
	}
	if err := f.svcs[shop.KindPayment].SetFault(shop.ActionCharge, shop.Fault{LostReplyRate: 1}); err != nil {
		t.Fatal(err)
	}
	if res := f.call("uid-faults", pay, sagav1.Forward, ok, nil); res.Outcome != saga.OutcomeTransient {
		t.Fatalf("lost reply: %+v", res)
	}
	if err := f.svcs[shop.KindPayment].SetFault(shop.ActionCharge, shop.Fault{}); err != nil {
		t.Fatal(err)
	}
	res := f.call("uid-faults", pay, sagav1.Forward, ok, nil)
	if res.Outcome != saga.OutcomeOK || res.Outputs["paymentId"] != "pay-3" {
		t.Fatalf("retry: %+v", res)
	}
	l, _ = f.svcs[shop.KindPayment].Ledger()
	if n := len(l.(*shop.PaymentLedger).Charges); n != 3 {
		t.Fatalf("%d charges", n)
	}
	if err := f.client.Health(context.Background(), f.eps[shop.KindInventory]); err != nil {
		t.Fatal(err)
	}
}
