package shop

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/sagaops/saga-operator/internal/participants"
)

// harness serves one service over real HTTP.
type harness struct {
	t    *testing.T
	kind Kind
	path string
	opts []Option
	svc  *Service
	srv  *httptest.Server
}

// start opens a service (NoSync unless opts turn it back on) behind an
// httptest server; it is closed when the test ends.
func start(t *testing.T, kind Kind, opts ...Option) *harness {
	t.Helper()
	h := &harness{t: t, kind: kind, path: filepath.Join(t.TempDir(), string(kind)+".db"), opts: opts}
	h.open()
	t.Cleanup(h.close)
	return h
}

func (h *harness) open() {
	h.t.Helper()
	svc, err := Open(h.kind, h.path, append([]Option{WithNoSync(true)}, h.opts...)...)
	if err != nil {
		h.t.Fatalf("open %s: %v", h.kind, err)
	}
	h.svc = svc
	h.srv = httptest.NewServer(svc)
}

func (h *harness) close() {
	if h.srv != nil {
		h.srv.Close()
		h.srv = nil
	}
	if h.svc != nil {
		if err := h.svc.Close(); err != nil {
			h.t.Errorf("close: %v", err)
		}
		h.svc = nil
	}
}

// reopen closes the service and its database and opens them again.
func (h *harness) reopen() {
	h.t.Helper()
	h.close()
	h.open()
}

type reply struct {
	status int
	body   []byte
	header http.Header
}

func (r reply) String() string { return http.StatusText(r.status) + " " + string(r.body) }

func (r reply) replayed() bool { return r.header.Get(HeaderReplayed) == "true" }

func (h *harness) raw(method, path string, body []byte, header map[string]string) reply {
	h.t.Helper()
	rep, err := h.rawErr(http.DefaultClient, method, path, body, header)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	return rep
}

func (h *harness) rawErr(c *http.Client, method, path string, body []byte, header map[string]string) (reply, error) {
	req, err := http.NewRequest(method, h.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{status: resp.StatusCode, body: b, header: resp.Header}, nil
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// call sends an action with the protocol's key for (uid, step, direction).
func (h *harness) call(action, direction string, req participants.ActionRequest) reply {
	h.t.Helper()
	return h.callKey(participants.IdempotencyKey(req.SagaUID, req.Step, direction), action, direction, req)
}

func (h *harness) callKey(key, action, direction string, req participants.ActionRequest) reply {
	h.t.Helper()
	req.Action, req.Direction = action, direction
	if req.Attempt == 0 {
		req.Attempt = 1
	}
	return h.raw(http.MethodPost, participants.ActionPathPrefix+action, mustJSON(h.t, req),
		map[string]string{participants.HeaderIdempotencyKey: key, participants.HeaderSagaID: req.SagaID})
}

func (h *harness) fwd(action string, req participants.ActionRequest) reply {
	h.t.Helper()
	return h.call(action, participants.DirectionForward, req)
}

func (h *harness) comp(action string, req participants.ActionRequest) reply {
	h.t.Helper()
	return h.call(action, participants.DirectionCompensate, req)
}

func (h *harness) state(uid string) map[string]participants.StepState {
	h.t.Helper()
	rep := h.raw(http.MethodGet, participants.StatePathPrefix+uid, nil, nil)
	if rep.status != http.StatusOK {
		h.t.Fatalf("state query: %v", rep)
	}
	var sr participants.StateResponse
	if err := json.Unmarshal(rep.body, &sr); err != nil {
		h.t.Fatalf("state query body %s: %v", rep.body, err)
	}
	if sr.Steps == nil {
		h.t.Fatalf("state query body %s has no steps", rep.body)
	}
	return sr.Steps
}

func (h *harness) stepState(uid, step string) participants.StepState {
	h.t.Helper()
	st, ok := h.state(uid)[step]
	if !ok {
		return participants.StepState{State: participants.StateNone}
	}
	return st
}

// ledger decodes GET /admin/ledger into v.
func (h *harness) ledger(v any) {
	h.t.Helper()
	rep := h.raw(http.MethodGet, "/admin/ledger", nil, nil)
	if rep.status != http.StatusOK {
		h.t.Fatalf("ledger: %v", rep)
	}
	if err := json.Unmarshal(rep.body, v); err != nil {
		h.t.Fatalf("ledger body %s: %v", rep.body, err)
	}
}

func (h *harness) payments() PaymentLedger {
	h.t.Helper()
	var l PaymentLedger
	h.ledger(&l)
	return l
}

func (h *harness) inventory() InventoryLedger {
	h.t.Helper()
	var l InventoryLedger
	h.ledger(&l)
	return l
}

func (h *harness) orders() OrdersLedger {
	h.t.Helper()
	var l OrdersLedger
	h.ledger(&l)
	return l
}

func (h *harness) notifications() NotificationLedger {
	h.t.Helper()
	var l NotificationLedger
	h.ledger(&l)
	return l
}

func (h *harness) tamper(r TamperRequest) reply {
	h.t.Helper()
	return h.raw(http.MethodPost, "/admin/tamper", mustJSON(h.t, r), nil)
}

func (h *harness) setFault(r FaultRequest) {
	h.t.Helper()
	rep := h.raw(http.MethodPost, "/admin/faults", mustJSON(h.t, r), nil)
	if rep.status != http.StatusOK {
		h.t.Fatalf("set fault: %v", rep)
	}
}

// order is a one-line order: qty of sku at price cents each.
func order(id, user, sku string, qty, price int64) participants.Order {
	return participants.Order{
		OrderID: id, UserID: user, Currency: "USD",
		Items:      []participants.Item{{SKU: sku, Quantity: qty, UnitPriceCents: price}},
		TotalCents: qty * price,
	}
}

func request(uid, step string, o participants.Order) participants.ActionRequest {
	return participants.ActionRequest{SagaID: "shop/order-" + o.OrderID, SagaUID: uid, Step: step, Order: o}
}

func outputsOf(t *testing.T, r reply) map[string]string {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("want 200, got %v", r)
	}
	var ar participants.ActionResponse
	if err := json.Unmarshal(r.body, &ar); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return ar.Outputs
}

func errorOf(t *testing.T, r reply) participants.ErrorDetail {
	t.Helper()
	var eb participants.ErrorBody
	if err := json.Unmarshal(r.body, &eb); err != nil || eb.Error.Code == "" {
		t.Fatalf("want an error body, got %v (%v)", r, err)
	}
	return eb.Error
}

func expectStatus(t *testing.T, r reply, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("want %d %s, got %v", status, code, r)
	}
	if code != "" {
		if got := errorOf(t, r).Code; got != code {
			t.Fatalf("want code %s, got %s (%s)", code, got, r.body)
		}
	}
}

func sameReply(t *testing.T, a, b reply) {
	t.Helper()
	if a.status != b.status || !bytes.Equal(a.body, b.body) {
		t.Fatalf("replies differ:\n first: %v\nsecond: %v", a, b)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
