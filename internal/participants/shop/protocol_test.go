package shop

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sagaops/saga-operator/internal/participants"
)

// Rule 1: the first call with a key decides; a repeat returns the same
// status and body and applies nothing.
func TestIdempotentReplay(t *testing.T) {
	cases := []struct {
		kind   Kind
		action string
		opts   []Option
		check  func(t *testing.T, h *harness)
	}{
		{KindOrders, ActionCreate, nil, func(t *testing.T, h *harness) {
			if l := h.orders(); len(l.Orders) != 1 {
				t.Fatalf("want 1 order, got %+v", l)
			}
		}},
		{KindPayment, ActionCharge, nil, func(t *testing.T, h *harness) {
			if l := h.payments(); len(l.Charges) != 1 || l.Totals["USD"].OutstandingCents != 3998 {
				t.Fatalf("want 1 charge of 3998, got %+v", l)
			}
		}},
		{KindInventory, ActionReserve, []Option{WithStock(map[string]int64{"SKU-1": 10})}, func(t *testing.T, h *harness) {
			if l := h.inventory(); len(l.Reservations) != 1 || l.Stock["SKU-1"] != (StockLevel{Available: 8, Reserved: 2}) {
				t.Fatalf("want 1 reservation of 2, got %+v", l)
			}
		}},
		{KindNotification, ActionSendConfirmation, nil, func(t *testing.T, h *harness) {
			if l := h.notifications(); len(l.Pending)+len(l.Delivered) != 1 {
				t.Fatalf("want 1 message, got %+v", l)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(string(tc.kind), func(t *testing.T) {
			h := start(t, tc.kind, tc.opts...)
			req := request("uid-1", "step-a", order("1001", "u-42", "SKU-1", 2, 1999))
			first := h.fwd(tc.action, req)
			if first.status != http.StatusOK || first.replayed() {
				t.Fatalf("first call: %v", first)
			}
			if len(outputsOf(t, first)) == 0 {
				t.Fatalf("no outputs: %s", first.body)
			}
			for attempt := int32(2); attempt <= 4; attempt++ {
				req.Attempt = attempt
				again := h.fwd(tc.action, req)
				sameReply(t, first, again)
				if !again.replayed() {
					t.Fatalf("attempt %d not marked replayed", attempt)
				}
			}
			tc.check(t, h)
			if st := h.stepState("uid-1", "step-a"); st.State != participants.StateApplied {
				t.Fatalf("state %+v", st)
			}
		})
	}
}

// Rule 1, per step: a forward call for an applied step under another key
// answers the same outputs without a second effect.
func TestAppliedStepAnswersSameOutputsUnderAnotherKey(t *testing.T) {
	h := start(t, KindPayment)
	req := request("uid-1", "pay", order("1", "u-1", "SKU-1", 1, 500))
	first := h.fwd(ActionCharge, req)
	other := h.callKey("some-other-key", ActionCharge, participants.DirectionForward, req)
	if other.status != http.StatusOK || string(other.body) != string(first.body) {
		t.Fatalf("want %v, got %v", first, other)
	}
	if l := h.payments(); len(l.Charges) != 1 {
		t.Fatalf("second charge: %+v", l.Charges)
	}
}

// Rule 2: the effect and the key survive closing and reopening the
// database (sync on, as in production).
func TestDurableAcrossReopen(t *testing.T) {
	h := start(t, KindPayment, WithNoSync(false))
	req := request("uid-1", "pay", order("1", "u-1", "SKU-1", 2, 1999))
	first := h.fwd(ActionCharge, req)
	declined := h.fwd(ActionCharge, request("uid-2", "pay", order("2", "u-1", "SKU-1", 1, 2_000_000)))
	expectStatus(t, declined, http.StatusUnprocessableEntity, CodeCardDeclined)
	refundFirst := h.comp(ActionRefund, request("uid-3", "pay", order("3", "u-1", "SKU-1", 1, 1)))

	h.reopen()

	sameReply(t, first, h.fwd(ActionCharge, req))
	sameReply(t, declined, h.fwd(ActionCharge, request("uid-2", "pay", order("2", "u-1", "SKU-1", 1, 2_000_000))))
	sameReply(t, refundFirst, h.comp(ActionRefund, request("uid-3", "pay", order("3", "u-1", "SKU-1", 1, 1))))
	l := h.payments()
	if len(l.Charges) != 1 || l.Totals["USD"].ChargedCents != 3998 || l.OutstandingByUser["u-1"]["USD"] != 3998 {
		t.Fatalf("ledger after reopen: %+v", l)
	}
	if st := h.stepState("uid-1", "pay"); st.State != participants.StateApplied {
		t.Fatalf("state after reopen: %+v", st)
	}
	if st := h.stepState("uid-3", "pay"); st.State != participants.StateCompensated {
		t.Fatalf("tombstone after reopen: %+v", st)
	}
	// The reopened service keeps numbering where it was.
	next := outputsOf(t, h.fwd(ActionCharge, request("uid-4", "pay", order("4", "u-1", "SKU-1", 1, 1))))
	if next["paymentId"] != "pay-2" {
		t.Fatalf("paymentId after reopen: %v", next)
	}
}

// Rules 3 and 4: a compensation without a forward call answers 200 and
// leaves a tombstone; the late forward call is refused and applies nothing.
func TestCompensationWithoutForward(t *testing.T) {
	cases := []struct {
		kind           Kind
		fwd, comp      string
		opts           []Option
		nothingApplied func(t *testing.T, h *harness)
	}{
		{KindOrders, ActionCreate, ActionCancel, nil, func(t *testing.T, h *harness) {
			if l := h.orders(); len(l.Orders) != 0 {
				t.Fatalf("orders: %+v", l)
			}
		}},
		{KindPayment, ActionCharge, ActionRefund, nil, func(t *testing.T, h *harness) {
			if l := h.payments(); len(l.Charges) != 0 || len(l.Refunds) != 0 {
				t.Fatalf("payments: %+v", l)
			}
		}},
		{KindInventory, ActionReserve, ActionRelease, []Option{WithStock(map[string]int64{"SKU-1": 5})}, func(t *testing.T, h *harness) {
			if l := h.inventory(); len(l.Reservations) != 0 || l.Stock["SKU-1"] != (StockLevel{Available: 5}) {
				t.Fatalf("inventory: %+v", l)
			}
		}},
		{KindNotification, ActionSendConfirmation, ActionSendCancellation, nil, func(t *testing.T, h *harness) {
			if l := h.notifications(); len(l.Pending)+len(l.Delivered) != 0 {
				t.Fatalf("messages: %+v", l)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(string(tc.kind), func(t *testing.T) {
			h := start(t, tc.kind, tc.opts...)
			req := request("uid-1", "s", order("1", "u-1", "SKU-1", 1, 100))
			c := h.comp(tc.comp, req)
			if c.status != http.StatusOK {
				t.Fatalf("compensation without forward: %v", c)
			}
			if st := h.stepState("uid-1", "s"); st.State != participants.StateCompensated || st.Detail == "" {
				t.Fatalf("tombstone state: %+v", st)
			}
			late := h.fwd(tc.fwd, req)
			expectStatus(t, late, http.StatusConflict, CodeAlreadyCompensated)
			sameReply(t, late, h.fwd(tc.fwd, req))
			sameReply(t, c, h.comp(tc.comp, req))
			tc.nothingApplied(t, h)
			if st := h.stepState("uid-1", "s"); st.State != participants.StateCompensated {
				t.Fatalf("state after late forward: %+v", st)
			}
		})
	}
}

// Rule 4 after a real compensation: a forward call under a new key is
// refused; the original key still answers its original 200.
func TestForwardAfterCompensation(t *testing.T) {
	h := start(t, KindPayment)
	req := request("uid-1", "pay", order("1", "u-1", "SKU-1", 1, 700))
	first := h.fwd(ActionCharge, req)
	if out := outputsOf(t, h.comp(ActionRefund, req)); out["refundId"] != "ref-1" {
		t.Fatalf("refund outputs: %v", out)
	}
	sameReply(t, first, h.fwd(ActionCharge, req))
	late := h.callKey("uid-1:pay:forward:again", ActionCharge, participants.DirectionForward, req)
	expectStatus(t, late, http.StatusConflict, CodeAlreadyCompensated)
	l := h.payments()
	if len(l.Charges) != 1 || l.Totals["USD"].RefundedCents != 700 || l.Totals["USD"].OutstandingCents != 0 {
		t.Fatalf("ledger: %+v", l)
	}
}

// Rule 5: a rejection leaves nothing in place; its answer is replayed; a
// compensation afterwards is a tombstone that undoes nothing.
func TestRejectionIsClean(t *testing.T) {
	t.Run("payment", func(t *testing.T) {
		h := start(t, KindPayment, WithPaymentLimit(1000))
		req := request("uid-1", "pay", order("1", "u-1", "SKU-1", 1, 1001))
		r := h.fwd(ActionCharge, req)
		expectStatus(t, r, http.StatusUnprocessableEntity, CodeCardDeclined)
		sameReply(t, r, h.fwd(ActionCharge, req))
		if st := h.stepState("uid-1", "pay"); st.State != participants.StateNone || !strings.Contains(st.Detail, CodeCardDeclined) {
			t.Fatalf("state: %+v", st)
		}
		if l := h.payments(); len(l.Charges) != 0 || len(l.OutstandingByUser) != 0 {
			t.Fatalf("ledger: %+v", l)
		}
		if c := h.comp(ActionRefund, req); c.status != http.StatusOK {
			t.Fatalf("compensation after rejection: %v", c)
		}
		if l := h.payments(); len(l.Refunds) != 0 {
			t.Fatalf("refund after rejection: %+v", l)
		}
		if st := h.stepState("uid-1", "pay"); st.State != participants.StateCompensated {
			t.Fatalf("state: %+v", st)
		}
	})
	t.Run("inventory", func(t *testing.T) {
		h := start(t, KindInventory, WithStock(map[string]int64{"SKU-1": 5, "SKU-2": 1}))
		o := order("1", "u-1", "SKU-1", 3, 100)
		o.Items = append(o.Items, participants.Item{SKU: "SKU-2", Quantity: 2})
		r := h.fwd(ActionReserve, request("uid-1", "res", o))
		expectStatus(t, r, http.StatusConflict, CodeInsufficientStock)
		if msg := errorOf(t, r).Message; !strings.Contains(msg, "SKU-2: need 2, available 1") || strings.Contains(msg, "SKU-1:") {
			t.Fatalf("message: %s", msg)
		}
		l := h.inventory()
		if len(l.Reservations) != 0 || l.Stock["SKU-1"] != (StockLevel{Available: 5}) || l.Stock["SKU-2"] != (StockLevel{Available: 1}) {
			t.Fatalf("ledger: %+v", l)
		}
		if st := h.stepState("uid-1", "res"); st.State != participants.StateNone {
			t.Fatalf("state: %+v", st)
		}
	})
}

func TestValidation(t *testing.T) {
	h := start(t, KindPayment)
	good := request("uid-1", "pay", order("1", "u-1", "SKU-1", 1, 100))
	good.Action, good.Direction, good.Attempt = ActionCharge, participants.DirectionForward, 1
	key := map[string]string{participants.HeaderIdempotencyKey: "uid-1:pay:forward"}
	with := func(f func(r *participants.ActionRequest)) []byte {
		r := good
		f(&r)
		return mustJSON(t, r)
	}
	cases := []struct {
		name   string
		path   string
		body   []byte
		header map[string]string
		status int
		code   string
	}{
		{"bad JSON", "/saga/v1/actions/charge", []byte(`{"sagaUid": `), key, 400, CodeBadRequest},
		{"trailing garbage", "/saga/v1/actions/charge", append(mustJSON(t, good), []byte("x")...), key, 400, CodeBadRequest},
		{"wrong JSON type", "/saga/v1/actions/charge", []byte(`{"attempt": "one"}`), key, 400, CodeBadRequest},
		{"unknown action", "/saga/v1/actions/teleport", mustJSON(t, good), key, 404, CodeUnknownAction},
		{"action of another service", "/saga/v1/actions/reserve", mustJSON(t, good), key, 404, CodeUnknownAction},
		{"missing key", "/saga/v1/actions/charge", mustJSON(t, good), nil, 400, CodeMissingKey},
		{"key too long", "/saga/v1/actions/charge", mustJSON(t, good), map[string]string{participants.HeaderIdempotencyKey: strings.Repeat("k", 600)}, 400, CodeBadRequest},
		{"forward action as compensation", "/saga/v1/actions/charge", with(func(r *participants.ActionRequest) { r.Direction = participants.DirectionCompensate }), key, 400, CodeDirectionMismatch},
		{"compensation as forward action", "/saga/v1/actions/refund", with(func(r *participants.ActionRequest) { r.Action = ActionRefund }), key, 400, CodeDirectionMismatch},
		{"unknown direction", "/saga/v1/actions/charge", with(func(r *participants.ActionRequest) { r.Direction = "sideways" }), key, 400, CodeBadRequest},
		{"body action differs", "/saga/v1/actions/charge", with(func(r *participants.ActionRequest) { r.Action = ActionRefund }), key, 400, CodeBadRequest},
		{"no sagaUid", "/saga/v1/actions/charge", with(func(r *participants.ActionRequest) { r.SagaUID = "" }), key, 400, CodeBadRequest},
		{"no step", "/saga/v1/actions/charge", with(func(r *participants.ActionRequest) { r.Step = "" }), key, 400, CodeBadRequest},
		{"too large", "/saga/v1/actions/charge", []byte(`{"sagaId":"` + strings.Repeat("x", maxRequestBytes) + `"}`), key, 413, CodeRequestTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectStatus(t, h.raw(http.MethodPost, tc.path, tc.body, tc.header), tc.status, tc.code)
		})
	}
	if r := h.raw(http.MethodGet, "/saga/v1/actions/charge", nil, key); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("GET on an action: %v", r)
	}
	// Nothing above was stored under the key: the well-formed call applies.
	r := h.raw(http.MethodPost, "/saga/v1/actions/charge", mustJSON(t, good), key)
	if r.status != http.StatusOK || r.replayed() {
		t.Fatalf("well-formed call after the rejected ones: %v", r)
	}
	// A missing "action" in the body is taken from the path.
	noAction := request("uid-2", "pay", order("2", "u-1", "SKU-1", 1, 100))
	noAction.Direction = participants.DirectionForward
	r = h.raw(http.MethodPost, "/saga/v1/actions/charge", mustJSON(t, noAction), map[string]string{participants.HeaderIdempotencyKey: "uid-2:pay:forward"})
	if r.status != http.StatusOK {
		t.Fatalf("call without action in body: %v", r)
	}
	// A business-level invalid order is a stored 422.
	bad := request("uid-3", "pay", order("3", "", "SKU-1", 1, 100))
	expectStatus(t, h.fwd(ActionCharge, bad), http.StatusUnprocessableEntity, CodeInvalidOrder)
	if r := h.fwd(ActionCharge, bad); !r.replayed() {
		t.Fatalf("422 not stored: %v", r)
	}
	// Another step of the same saga applied by another action.
	h2 := start(t, KindOrders)
	cr := request("uid-1", "o", order("1", "u-1", "SKU-1", 1, 1))
	outputsOf(t, h2.fwd(ActionCreate, cr))
	expectStatus(t, h2.callKey("other", ActionConfirm, participants.DirectionForward, cr), http.StatusBadRequest, CodeStepConflict)
}

func TestStateQuery(t *testing.T) {
	h := start(t, KindPayment, WithPaymentLimit(1000))
	o := order("1", "u-1", "SKU-1", 1, 400)
	outputsOf(t, h.fwd(ActionCharge, request("uid-1", "applied", o)))
	outputsOf(t, h.fwd(ActionCharge, request("uid-1", "compensated", o)))
	outputsOf(t, h.comp(ActionRefund, request("uid-1", "compensated", o)))
	outputsOf(t, h.comp(ActionRefund, request("uid-1", "tombstone", o)))
	expectStatus(t, h.fwd(ActionCharge, request("uid-1", "rejected", order("1", "u-1", "SKU-1", 1, 5000))), 422, CodeCardDeclined)
	outputsOf(t, h.fwd(ActionCharge, request("uid-2", "other-saga", o)))

	steps := h.state("uid-1")
	want := map[string]string{
		"applied":     participants.StateApplied,
		"compensated": participants.StateCompensated,
		"tombstone":   participants.StateCompensated,
		"rejected":    participants.StateNone,
	}
	if len(steps) != len(want) {
		t.Fatalf("steps: %+v", steps)
	}
	for step, st := range want {
		if steps[step].State != st || steps[step].Detail == "" {
			t.Errorf("%s: want %s, got %+v", step, st, steps[step])
		}
	}
	if d := steps["applied"].Detail; d != "captured 400 USD (pay-1)" {
		t.Errorf("detail: %q", d)
	}
	if d := steps["compensated"].Detail; !strings.HasPrefix(d, "refunded 400 USD (pay-2, ref-1)") {
		t.Errorf("detail: %q", d)
	}
	if s := h.state("no-such-saga"); len(s) != 0 {
		t.Fatalf("unknown saga: %+v", s)
	}
	// A uid that is a prefix of another does not see the other's steps.
	if s := h.state("uid"); len(s) != 0 {
		t.Fatalf("prefix uid: %+v", s)
	}
	rep := h.raw(http.MethodGet, "/saga/v1/sagas/no-such-saga", nil, nil)
	if string(rep.body) != `{"steps":{}}` {
		t.Fatalf("empty answer: %s", rep.body)
	}
}

func TestHealthz(t *testing.T) {
	h := start(t, KindOrders)
	r := h.raw(http.MethodGet, "/healthz", nil, nil)
	if r.status != http.StatusOK {
		t.Fatalf("healthz: %v", r)
	}
	svc := h.svc
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	if r := h.raw(http.MethodGet, "/healthz", nil, nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("healthz after close: %v", r)
	}
	if r := h.fwd(ActionCreate, request("u", "s", order("1", "u", "S", 1, 1))); r.status != http.StatusInternalServerError {
		t.Fatalf("action after close: %v", r)
	}
}

func TestBearerToken(t *testing.T) {
	h := start(t, KindOrders, WithBearerToken("s3cret"))
	req := request("uid-1", "o", order("1", "u-1", "SKU-1", 1, 1))
	expectStatus(t, h.fwd(ActionCreate, req), http.StatusUnauthorized, CodeUnauthorized)
	body := mustJSON(t, req)
	hdr := map[string]string{participants.HeaderIdempotencyKey: "k", "Authorization": "Bearer wrong"}
	expectStatus(t, h.raw(http.MethodPost, "/saga/v1/actions/create", body, hdr), http.StatusUnauthorized, CodeUnauthorized)
	req.Direction = participants.DirectionForward
	hdr["Authorization"] = "Bearer s3cret"
	if r := h.raw(http.MethodPost, "/saga/v1/actions/create", mustJSON(t, req), hdr); r.status != http.StatusOK {
		t.Fatalf("with token: %v", r)
	}
	if r := h.raw(http.MethodGet, "/saga/v1/sagas/uid-1", nil, nil); r.status != http.StatusUnauthorized {
		t.Fatalf("state without token: %v", r)
	}
	if r := h.raw(http.MethodGet, "/saga/v1/sagas/uid-1", nil, map[string]string{"Authorization": "Bearer s3cret"}); r.status != http.StatusOK {
		t.Fatalf("state with token: %v", r)
	}
	if r := h.raw(http.MethodGet, "/healthz", nil, nil); r.status != http.StatusOK {
		t.Fatalf("healthz needs no token: %v", r)
	}
}

func TestTransientFault(t *testing.T) {
	h := start(t, KindPayment)
	h.setFault(FaultRequest{Action: ActionCharge, TransientRate: 1})
	req := request("uid-1", "pay", order("1", "u-1", "SKU-1", 1, 100))
	for i := 0; i < 3; i++ {
		expectStatus(t, h.fwd(ActionCharge, req), http.StatusServiceUnavailable, CodeUnavailable)
	}
	// Other actions are not affected.
	outputsOf(t, h.comp(ActionRefund, request("uid-2", "pay", order("2", "u-1", "SKU-1", 1, 100))))
	if l := h.payments(); len(l.Charges) != 0 {
		t.Fatalf("a 503 applied something: %+v", l)
	}
	h.setFault(FaultRequest{Action: ActionCharge})
	r := h.fwd(ActionCharge, req)
	if r.status != http.StatusOK || r.replayed() {
		t.Fatalf("after the fault: %v", r)
	}
}

func TestTransientFaultRate(t *testing.T) {
	h := start(t, KindOrders, WithFault("*", Fault{TransientRate: 0.5}), WithSeed(7))
	var unavailable, ok int
	for i := 0; i < 200; i++ {
		r := h.fwd(ActionCreate, request("uid", "s", order("1", "u", "S", 1, 1)))
		switch r.status {
		case http.StatusOK:
			ok++
		case http.StatusServiceUnavailable:
			unavailable++
		default:
			t.Fatalf("unexpected %v", r)
		}
	}
	if unavailable < 60 || ok < 60 {
		t.Fatalf("rate 0.5 gave %d unavailable, %d ok", unavailable, ok)
	}
}

func TestLatencyFault(t *testing.T) {
	const latency = 400 * time.Millisecond
	h := start(t, KindInventory, WithFault(ActionReserve, Fault{LatencyMs: int(latency / time.Millisecond)}), WithStock(map[string]int64{"S": 1}))
	t0 := time.Now()
	outputsOf(t, h.fwd(ActionReserve, request("uid", "s", order("1", "u", "S", 1, 1))))
	if d := time.Since(t0); d < latency {
		t.Fatalf("answered after %v", d)
	}
	// Only reserve is delayed.
	t0 = time.Now()
	outputsOf(t, h.comp(ActionRelease, request("uid", "s", order("1", "u", "S", 1, 1))))
	if d := time.Since(t0); d >= latency {
		t.Fatalf("release delayed %v", d)
	}
}

// A lost reply: the call is applied and committed but the connection is
// closed without an answer; the retry with the same key returns the
// original answer and applies nothing more.
func TestLostReply(t *testing.T) {
	h := start(t, KindPayment, WithFault(ActionCharge, Fault{LostReplyRate: 1}))
	req := request("uid-1", "pay", order("1", "u-1", "SKU-1", 2, 1999))
	req.Action, req.Direction, req.Attempt = ActionCharge, participants.DirectionForward, 1
	hdr := map[string]string{participants.HeaderIdempotencyKey: "uid-1:pay:forward"}
	// A fresh connection per call, so net/http does not retry on its own.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if r, err := h.rawErr(client, http.MethodPost, "/saga/v1/actions/charge", mustJSON(t, req), hdr); err == nil {
		t.Fatalf("want a connection error, got %v", r)
	}
	l := h.payments()
	if len(l.Charges) != 1 || l.Charges[0].PaymentID != "pay-1" || l.Charges[0].Status != ChargeCaptured {
		t.Fatalf("the lost call was not committed: %+v", l)
	}
	if st := h.stepState("uid-1", "pay"); st.State != participants.StateApplied {
		t.Fatalf("state: %+v", st)
	}
	// Still lost on the replay.
	if _, err := h.rawErr(client, http.MethodPost, "/saga/v1/actions/charge", mustJSON(t, req), hdr); err == nil {
		t.Fatal("want a connection error on the replay")
	}
	h.setFault(FaultRequest{Action: ActionCharge})
	req.Attempt = 3
	r, err := h.rawErr(client, http.MethodPost, "/saga/v1/actions/charge", mustJSON(t, req), hdr)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusOK || string(r.body) != `{"outputs":{"paymentId":"pay-1"}}` || !r.replayed() {
		t.Fatalf("retry: %v (replayed %v)", r, r.replayed())
	}
	if l := h.payments(); len(l.Charges) != 1 || l.Totals["USD"].ChargedCents != 3998 {
		t.Fatalf("retry applied again: %+v", l)
	}
}

func TestAdminFaults(t *testing.T) {
	h := start(t, KindNotification)
	bad := []string{
		`{"action": "charge", "transientRate": 0.1}`,
		`{"transientRate": 1.5}`,
		`{"lostReplyRate": -0.1}`,
		`{"latencyMs": -1}`,
		`{"latencyMs": 60001}`,
		`{"deliveryFaultRate": 2}`,
		`{"unknownField": 1}`,
		`not json`,
	}
	for _, b := range bad {
		if r := h.raw(http.MethodPost, "/admin/faults", []byte(b), nil); r.status != http.StatusBadRequest {
			t.Errorf("%s: %v", b, r)
		}
	}
	h.setFault(FaultRequest{Action: "*", LatencyMs: 5})
	rate := 0.25
	h.setFault(FaultRequest{Action: ActionSendConfirmation, TransientRate: 0.5, LostReplyRate: 0.1, DeliveryFaultRate: &rate})
	var v FaultsView
	if err := json.Unmarshal(h.raw(http.MethodGet, "/admin/faults", nil, nil).body, &v); err != nil {
		t.Fatal(err)
	}
	if v.Faults["*"] != (Fault{LatencyMs: 5}) || v.Faults[ActionSendConfirmation] != (Fault{TransientRate: 0.5, LostReplyRate: 0.1}) ||
		v.DeliveryFaultRate == nil || *v.DeliveryFaultRate != 0.25 {
		t.Fatalf("faults: %+v", v)
	}
	h.setFault(FaultRequest{Action: ActionSendConfirmation})
	if f := h.svc.Faults(); len(f) != 1 {
		t.Fatalf("after clearing: %+v", f)
	}
	p := start(t, KindPayment)
	if r := p.raw(http.MethodPost, "/admin/faults", []byte(`{"deliveryFaultRate": 0.5}`), nil); r.status != http.StatusBadRequest {
		t.Fatalf("delivery faults on payment: %v", r)
	}
	if _, err := Open(KindPayment, p.path+"2", WithFault("reserve", Fault{TransientRate: 1})); err == nil {
		t.Fatal("Open accepted a fault for another service's action")
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open("warehouse", dir+"/w.db"); err == nil {
		t.Fatal("unknown kind opened")
	}
	if _, err := Open(KindInventory, dir+"/i.db", WithStock(map[string]int64{"S": -1})); err == nil {
		t.Fatal("negative stock accepted")
	}
	s, err := Open(KindOrders, dir+"/o.db", WithNoSync(true))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The file is locked: a second open times out instead of hanging.
	if _, err := Open(KindOrders, dir+"/o.db", WithOpenTimeout(50*time.Millisecond)); err == nil {
		t.Fatal("second open of a locked file succeeded")
	}
}
