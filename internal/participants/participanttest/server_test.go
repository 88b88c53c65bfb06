package participanttest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
	"github.com/sagaops/saga-operator/internal/participants"
	"github.com/sagaops/saga-operator/internal/participants/participanttest"
	"github.com/sagaops/saga-operator/internal/saga"
)

const uid = "6c1f3a0e-5b7e-4c1d-9d55-0c3f2d7f1a11"

func newServer(t *testing.T) *participanttest.Server {
	t.Helper()
	s := participanttest.NewServer()
	t.Cleanup(s.Close)
	return s
}

// oneShot is a client that opens a new connection for every call, so that
// net/http never retries a call on its own (see TestLostReplyOnReusedConnection).
func oneShot() *participants.Client {
	return participants.NewClient(participants.ClientOptions{
		Transport: &http.Transport{DisableKeepAlives: true},
	})
}

func endpoint(s *participanttest.Server) participants.Endpoint {
	return participants.Endpoint{Name: "payment", URL: s.URL(), Timeout: 2 * time.Second}
}

func call(step string, dir sagav1.Direction, attempt int32) participants.CallRequest {
	action := "charge"
	if dir == sagav1.Compensate {
		action = "refund"
	}
	return participants.CallRequest{
		SagaNamespace: "shop",
		SagaName:      "order-1001",
		SagaUID:       uid,
		Step:          step,
		Action:        action,
		Direction:     dir,
		Attempt:       attempt,
		Order: sagav1.Order{
			OrderID: "1001", UserID: "u-42", Currency: "USD",
			Items: []sagav1.OrderItem{{SKU: "SKU-1", Quantity: 2, UnitPriceCents: 1999}},
		},
		Outputs: map[string]map[string]string{"create-order": {"orderRef": "ord-77"}},
	}
}

func fwdKey(step string) string  { return participants.IdempotencyKey(uid, step, "forward") }
func compKey(step string) string { return participants.IdempotencyKey(uid, step, "compensate") }

func paymentID(req participants.ActionRequest) map[string]string {
	return map[string]string{"paymentId": fmt.Sprintf("pay-%s-%d", req.Order.OrderID, req.Order.TotalCents)}
}

func expect(t *testing.T, res saga.Result, outcome saga.Outcome, code string) {
	t.Helper()
	if res.Outcome != outcome {
		t.Fatalf("outcome %s, want %s (error %+v)", res.Outcome, outcome, res.Error)
	}
	got := ""
	if res.Error != nil {
		got = res.Error.Code
	}
	if got != code {
		t.Fatalf("code %q, want %q (%+v)", got, code, res.Error)
	}
}

func TestForwardAndReplay(t *testing.T) {
	s := newServer(t)
	var n atomic.Int32
	s.SetBehavior("charge", participanttest.Behavior{Outputs: func(req participants.ActionRequest) map[string]string {
		// Deliberately impure, to show that replays do not call it.
		out := paymentID(req)
		out["n"] = fmt.Sprint(n.Add(1))
		return out
	}})
	c := oneShot()
	first := c.Call(context.Background(), endpoint(s), call("process-payment", sagav1.Forward, 1))
	expect(t, first, saga.OutcomeOK, "")
	if first.Outputs["paymentId"] != "pay-1001-3998" || first.Outputs["n"] != "1" {
		t.Fatalf("outputs %v", first.Outputs)
	}
	for attempt := int32(2); attempt <= 4; attempt++ {
		again := c.Call(context.Background(), endpoint(s), call("process-payment", sagav1.Forward, attempt))
		expect(t, again, saga.OutcomeOK, "")
		if fmt.Sprint(again.Outputs) != fmt.Sprint(first.Outputs) {
			t.Fatalf("replay outputs %v, first %v", again.Outputs, first.Outputs)
		}
	}
	if got := s.AppliedCount(fwdKey("process-payment")); got != 1 {
		t.Errorf("applied %d times", got)
	}
	if got := s.StepState(uid, "process-payment"); got != participants.StateApplied {
		t.Errorf("state %s", got)
	}
	calls := s.Calls(fwdKey("process-payment"))
	if len(calls) != 4 || calls[0].Replayed || !calls[3].Replayed || calls[3].Status != 200 {
		t.Fatalf("calls %+v", calls)
	}
	for i, r := range calls {
		if r.Body.Attempt != int32(i+1) || r.SagaID != "shop/order-1001" || r.Method != http.MethodPost ||
			r.Path != "/saga/v1/actions/charge" || r.ContentType != "application/json" || r.Accept != "application/json" {
			t.Errorf("call %d: %+v", i, r)
		}
	}
	status, body, ok := s.Decided(fwdKey("process-payment"))
	if !ok || status != 200 || string(body) != `{"outputs":{"n":"1","paymentId":"pay-1001-3998"}}` {
		t.Errorf("decision %d %s %v", status, body, ok)
	}
}

func TestReplayIsByteIdenticalOverRawHTTP(t *testing.T) {
	s := newServer(t)
	s.SetBehavior("charge", participanttest.Behavior{Reject: participanttest.RejectAlways(422, "invalid_card", "card expired")})
	body := `{"sagaId":"shop/o","sagaUid":"u1","step":"pay","action":"charge","direction":"forward","attempt":1,` +
		`"order":{"orderId":"1","userId":"u","currency":"USD","items":[{"sku":"a","quantity":2,"unitPriceCents":5}],"totalCents":10},"outputs":{}}`
	var answers []string
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest(http.MethodPost, s.URL()+"/saga/v1/actions/charge", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "u1:pay:forward")
		req.Header.Set("Saga-Id", "shop/o")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		answers = append(answers, fmt.Sprintf("%d %s", resp.StatusCode, b))
	}
	want := `422 {"error":{"code":"invalid_card","message":"card expired"}}`
	for i, a := range answers {
		if a != want {
			t.Errorf("answer %d = %s", i, a)
		}
	}
	// Rule 5: nothing in place.
	if got := s.StepState("u1", "pay"); got != participants.StateNone {
		t.Errorf("state %s", got)
	}
	if got := s.AppliedCount("u1:pay:forward"); got != 0 {
		t.Errorf("applied %d", got)
	}
}

func TestProtocolViolationsAre400(t *testing.T) {
	s := newServer(t)
	good := `{"sagaId":"shop/o","sagaUid":"u1","step":"pay","action":"charge","direction":"forward","attempt":1,` +
		`"order":{"orderId":"1","userId":"u","currency":"USD","items":[],"totalCents":0},"outputs":{}}`
	cases := []struct {
		name, method, path, body, key, sagaID, ctype string
		status                                       int
	}{
		{"conforming", "POST", "/saga/v1/actions/charge", good, "u1:pay:forward", "shop/o", "application/json", 200},
		{"wrong key", "POST", "/saga/v1/actions/charge", good, "u1:pay:forward:2", "shop/o", "application/json", 400},
		{"no key", "POST", "/saga/v1/actions/charge", good, "", "shop/o", "application/json", 400},
		{"wrong saga id", "POST", "/saga/v1/actions/charge", good, "u1:pay:forward", "shop/x", "application/json", 400},
		{"path action", "POST", "/saga/v1/actions/refund", good, "u1:pay:forward", "shop/o", "application/json", 400},
		{"content type", "POST", "/saga/v1/actions/charge", good, "u1:pay:forward", "shop/o", "text/plain", 400},
		{"null outputs", "POST", "/saga/v1/actions/charge", strings.Replace(good, `"outputs":{}`, `"outputs":null`, 1), "u1:pay:forward", "shop/o", "application/json", 400},
		{"bad total", "POST", "/saga/v1/actions/charge", strings.Replace(good, `"totalCents":0`, `"totalCents":1`, 1), "u1:pay:forward", "shop/o", "application/json", 400},
		{"not json", "POST", "/saga/v1/actions/charge", `{`, "u1:pay:forward", "shop/o", "application/json", 400},
		{"GET", "GET", "/saga/v1/actions/charge", ``, "u1:pay:forward", "shop/o", "application/json", 405},
		{"unknown path", "GET", "/nope", ``, "", "", "", 404},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, s.URL()+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Content-Type", tc.ctype)
		req.Header.Set("Idempotency-Key", tc.key)
		req.Header.Set("Saga-Id", tc.sagaID)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d %s", tc.name, resp.StatusCode, b)
		}
	}
}

func TestCompensationWithoutForward(t *testing.T) {
	s := newServer(t)
	c := oneShot()
	res := c.Call(context.Background(), endpoint(s), call("pay", sagav1.Compensate, 1))
	expect(t, res, saga.OutcomeOK, "")
	if got := s.StepState(uid, "pay"); got != participants.StateCompensated {
		t.Fatalf("state %s", got)
	}
	// Rule 4: the late forward call is refused and applies nothing, every time.
	for attempt := int32(1); attempt <= 2; attempt++ {
		res = c.Call(context.Background(), endpoint(s), call("pay", sagav1.Forward, attempt))
		expect(t, res, saga.OutcomeRejected, participants.CodeAlreadyCompensated)
	}
	if s.AppliedCount(fwdKey("pay")) != 0 || s.AppliedCount(compKey("pay")) != 1 {
		t.Errorf("applied forward %d compensate %d", s.AppliedCount(fwdKey("pay")), s.AppliedCount(compKey("pay")))
	}
	if got := s.StepState(uid, "pay"); got != participants.StateCompensated {
		t.Fatalf("state %s", got)
	}
	states, err := c.State(context.Background(), endpoint(s), uid)
	if err != nil || states["pay"].State != participants.StateCompensated {
		t.Fatalf("state query %v %v", states, err)
	}
}

func TestForwardThenCompensate(t *testing.T) {
	s := newServer(t)
	s.SetBehavior("charge", participanttest.Behavior{Outputs: paymentID})
	var refundSaw atomic.Value
	s.SetBehavior("refund", participanttest.Behavior{Outputs: func(req participants.ActionRequest) map[string]string {
		refundSaw.Store(req.Outputs["pay"]["paymentId"])
		return nil
	}})
	c := oneShot()
	res := c.Call(context.Background(), endpoint(s), call("pay", sagav1.Forward, 1))
	expect(t, res, saga.OutcomeOK, "")
	comp := call("pay", sagav1.Compensate, 1)
	comp.Outputs["pay"] = res.Outputs
	expect(t, c.Call(context.Background(), endpoint(s), comp), saga.OutcomeOK, "")
	expect(t, c.Call(context.Background(), endpoint(s), comp), saga.OutcomeOK, "")
	if refundSaw.Load() != "pay-1001-3998" {
		t.Errorf("refund saw %v", refundSaw.Load())
	}
	// The forward key still replays its own decision.
	expect(t, c.Call(context.Background(), endpoint(s), call("pay", sagav1.Forward, 2)), saga.OutcomeOK, "")
	if s.StepState(uid, "pay") != participants.StateCompensated || s.AppliedCount(fwdKey("pay")) != 1 || s.AppliedCount(compKey("pay")) != 1 {
		t.Errorf("ledger %v", s.Ledger())
	}
}

func TestRejectionIsClean(t *testing.T) {
	s := newServer(t)
	s.SetBehavior("charge", participanttest.Behavior{
		Outputs: paymentID,
		Reject: func(req participants.ActionRequest) *participanttest.Rejection {
			if req.Order.TotalCents > 1000 {
				return &participanttest.Rejection{Code: "insufficient_funds", Message: "limit 1000"}
			}
			return nil
		},
	})
	c := oneShot()
	res := c.Call(context.Background(), endpoint(s), call("pay", sagav1.Forward, 1))
	expect(t, res, saga.OutcomeRejected, "insufficient_funds")
	if res.Error.HTTPStatus != 409 {
		t.Errorf("status %d", res.Error.HTTPStatus)
	}
	if s.StepState(uid, "pay") != participants.StateNone || s.AppliedCount(fwdKey("pay")) != 0 {
		t.Errorf("ledger %v", s.Ledger())
	}
	// Compensating a rejected step records it compensated (rule 3).
	expect(t, c.Call(context.Background(), endpoint(s), call("pay", sagav1.Compensate, 1)), saga.OutcomeOK, "")
	if s.StepState(uid, "pay") != participants.StateCompensated {
		t.Errorf("ledger %v", s.Ledger())
	}
}

func TestCompensationRefused(t *testing.T) {
	s := newServer(t)
	s.SetBehavior("refund", participanttest.Behavior{Reject: participanttest.RejectAlways(409, "refund_window_closed", "too late")})
	c := oneShot()
	expect(t, c.Call(context.Background(), endpoint(s), call("pay", sagav1.Forward, 1)), saga.OutcomeOK, "")
	expect(t, c.Call(context.Background(), endpoint(s), call("pay", sagav1.Compensate, 1)), saga.OutcomeRejected, "refund_window_closed")
	if s.StepState(uid, "pay") != participants.StateApplied {
		t.Errorf("ledger %v", s.Ledger())
	}
}

func TestScripts(t *testing.T) {
	s := newServer(t)
	s.SetBehavior("charge", participanttest.Behavior{
		Outputs: paymentID,
		Script: []participanttest.Answer{
			{Status: 503, RetryAfter: "2"},
			{Status: 503},
			{Status: 202, RetryAfterSeconds: 3},
			{Status: 202},
		},
	})
	c := oneShot()
	e := endpoint(s)
	wants := []struct {
		outcome saga.Outcome
		code    string
		after   time.Duration
	}{
		{saga.OutcomeTransient, "HTTP503", 2 * time.Second},
		{saga.OutcomeTransient, "HTTP503", 0},
		{saga.OutcomeAccepted, "", 3 * time.Second},
		{saga.OutcomeAccepted, "", time.Second},
		{saga.OutcomeOK, "", 0},
		{saga.OutcomeOK, "", 0},
	}
	for i, w := range wants {
		res := c.Call(context.Background(), e, call("pay", sagav1.Forward, int32(i+1)))
		expect(t, res, w.outcome, w.code)
		if res.RetryAfter != w.after {
			t.Errorf("call %d retryAfter %s, want %s", i+1, res.RetryAfter, w.after)
		}
		if i < 4 && s.StepState(uid, "pay") != participants.StateNone {
			t.Errorf("call %d: effect applied by a scripted answer", i+1)
		}
	}
	if s.AppliedCount(fwdKey("pay")) != 1 {
		t.Errorf("applied %d", s.AppliedCount(fwdKey("pay")))
	}
	// The script runs per key: another step starts it over.
	expect(t, c.Call(context.Background(), e, call("pay2", sagav1.Forward, 1)), saga.OutcomeTransient, "HTTP503")
}

func TestScriptedBodies(t *testing.T) {
	s := newServer(t)
	s.SetBehavior("charge", participanttest.Behavior{Script: []participanttest.Answer{
		{Status: 200, Body: `{"outputs":`},
		{Status: 200, Body: `{"outputs":{}}` + strings.Repeat(" ", participants.MaxResponseBytes)},
		{Status: 200, Body: `{"outputs":{"` + strings.Repeat("k", 64) + `":"v"}}`},
	}})
	c := oneShot()
	e := endpoint(s)
	expect(t, c.Call(context.Background(), e, call("pay", sagav1.Forward, 1)), saga.OutcomeTransient, participants.CodeInvalidResponse)
	expect(t, c.Call(context.Background(), e, call("pay", sagav1.Forward, 2)), saga.OutcomeTransient, participants.CodeResponseTooLarge)
	expect(t, c.Call(context.Background(), e, call("pay", sagav1.Forward, 3)), saga.OutcomeInvalidOutputs, participants.CodeInvalidOutputs)
	expect(t, c.Call(context.Background(), e, call("pay", sagav1.Forward, 4)), saga.OutcomeOK, "")
}

func TestLostReply(t *testing.T) {
	s := newServer(t)
	s.SetBehavior("charge", participanttest.Behavior{Outputs: paymentID, Script: []participanttest.Answer{{LostReply: true}}})
	c := oneShot()
	res := c.Call(context.Background(), endpoint(s), call("pay", sagav1.Forward, 1))
	expect(t, res, saga.OutcomeTransient, participants.CodeConnectionError)
	// The effect is in place although the caller never heard of it.
	if s.StepState(uid, "pay") != participants.StateApplied || s.AppliedCount(fwdKey("pay")) != 1 {
		t.Fatalf("ledger %v", s.Ledger())
	}
	res = c.Call(context.Background(), endpoint(s), call("pay", sagav1.Forward, 2))
	expect(t, res, saga.OutcomeOK, "")
	if res.Outputs["paymentId"] != "pay-1001-3998" || s.AppliedCount(fwdKey("pay")) != 1 {
		t.Fatalf("outputs %v applied %d", res.Outputs, s.AppliedCount(fwdKey("pay")))
	}
	calls := s.Calls(fwdKey("pay"))
	if len(calls) != 2 || calls[0].Status != 0 || !calls[1].Replayed {
		t.Errorf("calls %+v", calls)
	}
}

// On a kept-alive connection, net/http itself resends a request that carries
// an Idempotency-Key when the server closes the connection without
// answering: the protocol makes that harmless, and the caller sees only the
// replayed answer.
func TestLostReplyOnReusedConnection(t *testing.T) {
	s := newServer(t)
	s.SetBehavior("charge", participanttest.Behavior{Script: []participanttest.Answer{{LostReply: true}}})
	c := participants.NewClient(participants.ClientOptions{})
	if err := c.Health(context.Background(), endpoint(s)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the connection go back to the idle pool
	res := c.Call(context.Background(), endpoint(s), call("pay", sagav1.Forward, 1))
	calls := s.Calls(fwdKey("pay"))
	if res.Outcome != saga.OutcomeOK {
		// The connection was not reused after all: the caller saw the loss.
		t.Logf("no transparent retry: %s %+v", res.Outcome, res.Error)
		expect(t, res, saga.OutcomeTransient, participants.CodeConnectionError)
		expect(t, c.Call(context.Background(), endpoint(s), call("pay", sagav1.Forward, 2)), saga.OutcomeOK, "")
		calls = s.Calls(fwdKey("pay"))
	}
	if len(calls) != 2 || calls[0].Status != 0 || !calls[1].Replayed || s.AppliedCount(fwdKey("pay")) != 1 {
		t.Errorf("calls %+v", calls)
	}
}

func TestDrop(t *testing.T) {
	s := newServer(t)
	s.SetBehavior("charge", participanttest.Behavior{Script: []participanttest.Answer{{Drop: true}}})
	c := oneShot()
	expect(t, c.Call(context.Background(), endpoint(s), call("pay", sagav1.Forward, 1)), saga.OutcomeTransient, participants.CodeConnectionError)
	if s.StepState(uid, "pay") != participants.StateNone {
		t.Fatalf("dropped call applied")
	}
	expect(t, c.Call(context.Background(), endpoint(s), call("pay", sagav1.Forward, 2)), saga.OutcomeOK, "")
}

func TestHang(t *testing.T) {
	s := newServer(t)
	s.SetBehavior("charge", participanttest.Behavior{Hang: true})
	e := endpoint(s)
	e.Timeout = 100 * time.Millisecond
	c := oneShot()
	start := time.Now()
	expect(t, c.Call(context.Background(), e, call("pay", sagav1.Forward, 1)), saga.OutcomeTransient, participants.CodeTimeout)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s", d)
	}
	if s.StepState(uid, "pay") != participants.StateNone {
		t.Fatal("hanging call applied")
	}
	s.SetBehavior("charge", participanttest.Behavior{})
	expect(t, c.Call(context.Background(), e, call("pay", sagav1.Forward, 2)), saga.OutcomeOK, "")

	// A scripted hang, then normal processing.
	s.SetBehavior("refund", participanttest.Behavior{Script: []participanttest.Answer{{Hang: true}}})
	expect(t, c.Call(context.Background(), e, call("pay", sagav1.Compensate, 1)), saga.OutcomeTransient, participants.CodeTimeout)
	expect(t, c.Call(context.Background(), e, call("pay", sagav1.Compensate, 2)), saga.OutcomeOK, "")
}

func TestCloseReleasesHangingCalls(t *testing.T) {
	s := participanttest.NewServer()
	s.SetBehavior("charge", participanttest.Behavior{Hang: true})
	e := endpoint(s)
	e.Timeout = time.Minute
	done := make(chan saga.Result)
	go func() { done <- oneShot().Call(context.Background(), e, call("pay", sagav1.Forward, 1)) }()
	for len(s.Requests()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a hanging call")
	}
	res := <-done
	if res.Outcome != saga.OutcomeTransient {
		t.Errorf("result %+v", res)
	}
	s.Close()
}

func TestLatencyBeyondTimeoutLeavesTheEffect(t *testing.T) {
	s := newServer(t)
	s.SetBehavior("charge", participanttest.Behavior{Outputs: paymentID, Latency: 300 * time.Millisecond})
	e := endpoint(s)
	e.Timeout = 100 * time.Millisecond
	c := oneShot()
	expect(t, c.Call(context.Background(), e, call("pay", sagav1.Forward, 1)), saga.OutcomeTransient, participants.CodeTimeout)
	deadline := time.Now().Add(5 * time.Second)
	for s.StepState(uid, "pay") != participants.StateApplied {
		if time.Now().After(deadline) {
			t.Fatal("the slow call was never processed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.Timeout = 2 * time.Second
	res := c.Call(context.Background(), e, call("pay", sagav1.Forward, 2))
	expect(t, res, saga.OutcomeOK, "")
	if s.AppliedCount(fwdKey("pay")) != 1 || res.Outputs["paymentId"] == "" {
		t.Errorf("applied %d outputs %v", s.AppliedCount(fwdKey("pay")), res.Outputs)
	}
}

func TestBearer(t *testing.T) {
	s := newServer(t)
	s.RequireBearer("tok")
	c := oneShot()
	e := endpoint(s)
	expect(t, c.Call(context.Background(), e, call("pay", sagav1.Forward, 1)), saga.OutcomeRejected, "HTTP401")
	if _, err := c.State(context.Background(), e, uid); err == nil {
		t.Error("state query without token answered")
	}
	if err := c.Health(context.Background(), e); err != nil {
		t.Errorf("health needs no token: %v", err)
	}
	if s.StepState(uid, "pay") != participants.StateNone {
		t.Fatal("unauthorized call applied")
	}
	e.BearerToken = "tok"
	expect(t, c.Call(context.Background(), e, call("pay", sagav1.Forward, 2)), saga.OutcomeOK, "")
	if _, err := c.State(context.Background(), e, uid); err != nil {
		t.Error(err)
	}
	calls := s.Calls(fwdKey("pay"))
	if calls[0].Authorization != "" || calls[1].Authorization != "Bearer tok" {
		t.Errorf("authorization %q %q", calls[0].Authorization, calls[1].Authorization)
	}
}

func TestTraceparentIsRecorded(t *testing.T) {
	s := newServer(t)
	c := participants.NewClient(participants.ClientOptions{Propagator: func(_ context.Context, h http.Header) {
		h.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	}})
	c.Call(context.Background(), endpoint(s), call("pay", sagav1.Forward, 1))
	if r := s.Requests()[0]; r.Traceparent != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" || r.Seq != 1 || r.UserAgent != "saga-operator" {
		t.Errorf("recorded %+v", r)
	}
}

func TestStateHealthAndTamper(t *testing.T) {
	s := newServer(t)
	c := oneShot()
	e := endpoint(s)
	states, err := c.State(context.Background(), e, uid)
	if err != nil || len(states) != 0 {
		t.Fatalf("empty state %v %v", states, err)
	}
	expect(t, c.Call(context.Background(), e, call("a", sagav1.Forward, 1)), saga.OutcomeOK, "")
	expect(t, c.Call(context.Background(), e, call("b", sagav1.Forward, 1)), saga.OutcomeOK, "")
	s.Tamper(uid, "a", participants.StateNone)
	s.Tamper(uid, "b", "")
	s.Tamper(uid, "c", "weird")
	states, err = c.State(context.Background(), e, uid)
	if err != nil || len(states) != 2 || states["a"].State != "none" || states["c"].State != "weird" {
		t.Fatalf("tampered state %v %v", states, err)
	}
	if l := s.Ledger(); len(l[uid]) != 2 {
		t.Errorf("ledger %v", l)
	}

	// Restore from backup: effect and key lost; the same key applies again.
	s.ForgetKey(fwdKey("a"))
	expect(t, c.Call(context.Background(), e, call("a", sagav1.Forward, 1)), saga.OutcomeOK, "")
	if s.StepState(uid, "a") != participants.StateApplied || s.AppliedCount(fwdKey("a")) != 2 {
		t.Errorf("after redrive: %s, applied %d", s.StepState(uid, "a"), s.AppliedCount(fwdKey("a")))
	}

	s.SetStateSupported(false)
	if _, err := c.State(context.Background(), e, uid); err != participants.ErrQueryNotSupported {
		t.Errorf("unsupported: %v", err)
	}
	if err := c.Health(context.Background(), e); err != nil {
		t.Error(err)
	}
	s.SetHealthy(false)
	if err := c.Health(context.Background(), e); err == nil {
		t.Error("unhealthy server reported healthy")
	}
}

func TestRandomTransientFaults(t *testing.T) {
	s := newServer(t)
	s.SetSeed(42)
	s.SetBehavior("charge", participanttest.Behavior{Outputs: paymentID, TransientRate: 0.5, LostReplyRate: 0.3})
	c := oneShot()
	var transient int
	for step := 0; step < 20; step++ {
		name := fmt.Sprintf("s%d", step)
		for attempt := int32(1); ; attempt++ {
			res := c.Call(context.Background(), endpoint(s), call(name, sagav1.Forward, attempt))
			if res.Outcome == saga.OutcomeOK {
				break
			}
			if res.Outcome != saga.OutcomeTransient || attempt > 100 {
				t.Fatalf("step %s attempt %d: %+v", name, attempt, res)
			}
			transient++
		}
		if s.AppliedCount(fwdKey(name)) != 1 {
			t.Fatalf("step %s applied %d", name, s.AppliedCount(fwdKey(name)))
		}
	}
	if transient == 0 {
		t.Error("no fault injected")
	}
}

// A small load: many sagas, keys called concurrently from several
// goroutines, forward racing compensation, random faults. Every key must be
// applied at most once and every decision seen identically by all callers.
func TestConcurrentLoad(t *testing.T) {
	s := newServer(t)
	s.SetBehavior("charge", participanttest.Behavior{Outputs: paymentID, TransientRate: 0.1, LostReplyRate: 0.1})
	s.SetBehavior("refund", participanttest.Behavior{TransientRate: 0.1})
	c := participants.NewClient(participants.ClientOptions{MaxConnsPerHost: 16})
	const sagas, racers = 40, 4

	type seen struct {
		mu      sync.Mutex
		results map[string][]string
	}
	got := seen{results: map[string][]string{}}
	note := func(key string, res saga.Result) {
		got.mu.Lock()
		defer got.mu.Unlock()
		code := ""
		if res.Error != nil {
			code = res.Error.Code
		}
		got.results[key] = append(got.results[key], fmt.Sprintf("%s %s %v", res.Outcome, code, res.Outputs))
	}
	untilDefinitive := func(req participants.CallRequest) saga.Result {
		for attempt := int32(1); ; attempt++ {
			req.Attempt = attempt
			res := c.Call(context.Background(), participants.Endpoint{URL: s.URL(), Timeout: 5 * time.Second}, req)
			if res.Outcome != saga.OutcomeTransient || attempt >= 200 {
				return res
			}
		}
	}

	var wg sync.WaitGroup
	for i := 0; i < sagas; i++ {
		step := fmt.Sprintf("step-%d", i)
		for r := 0; r < racers; r++ {
			wg.Add(1)
			go func(r int) {
				defer wg.Done()
				dir := sagav1.Forward
				if i%4 == 0 && r%2 == 1 {
					dir = sagav1.Compensate // a quarter of the steps race their compensation
				}
				req := call(step, dir, 1)
				res := untilDefinitive(req)
				note(participants.IdempotencyKey(uid, step, string(dir)), res)
			}(r)
		}
	}
	wg.Wait()

	for key, rs := range got.results {
		for _, r := range rs[1:] {
			if r != rs[0] {
				t.Errorf("key %s answered differently: %q", key, rs)
				break
			}
		}
		if strings.Contains(rs[0], "Transient") {
			t.Errorf("key %s never decided: %q", key, rs)
		}
	}
	for i := 0; i < sagas; i++ {
		step := fmt.Sprintf("step-%d", i)
		if n := s.AppliedCount(fwdKey(step)); n > 1 {
			t.Errorf("%s applied %d times", step, n)
		}
		state := s.StepState(uid, step)
		if i%4 == 0 {
			// Compensation won or came second: either way nothing stays applied.
			if state != participants.StateCompensated {
				t.Errorf("%s: %s after compensation", step, state)
			}
			fwd := got.results[fwdKey(step)][0]
			if n := s.AppliedCount(fwdKey(step)); (n == 0) != strings.Contains(fwd, participants.CodeAlreadyCompensated) {
				t.Errorf("%s: forward answered %q but applied %d", step, fwd, n)
			}
		} else if state != participants.StateApplied || s.AppliedCount(fwdKey(step)) != 1 {
			t.Errorf("%s: %s, applied %d", step, state, s.AppliedCount(fwdKey(step)))
		}
	}
	var replayed int
	for _, r := range s.Requests() {
		if r.Replayed {
			replayed++
		}
	}
	if replayed == 0 {
		t.Error("no replays under load")
	}
}

func TestRecordedBodyIsTheClientsBody(t *testing.T) {
	s := newServer(t)
	oneShot().Call(context.Background(), endpoint(s), call("pay", sagav1.Forward, 1))
	r := s.Requests()[0]
	var again participants.ActionRequest
	if err := json.Unmarshal(r.RawBody, &again); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(again)
	b, _ := json.Marshal(r.Body)
	if !bytes.Equal(a, b) || r.Body.Order.TotalCents != 3998 || r.Body.Outputs["create-order"]["orderRef"] != "ord-77" {
		t.Errorf("recorded body %+v", r.Body)
	}
}
