package participants_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
	"github.com/sagaops/saga-operator/internal/participants"
	"github.com/sagaops/saga-operator/internal/saga"
)

func order() sagav1.Order {
	return sagav1.Order{
		OrderID:  "1001",
		UserID:   "u-42",
		Currency: "USD",
		Items:    []sagav1.OrderItem{{SKU: "SKU-1", Quantity: 2, UnitPriceCents: 1999}},
	}
}

func callReq(dir sagav1.Direction, attempt int32) participants.CallRequest {
	action := "charge"
	if dir == sagav1.Compensate {
		action = "refund"
	}
	return participants.CallRequest{
		SagaNamespace: "shop",
		SagaName:      "order-1001",
		SagaUID:       "6c1f3a0e-5b7e-4c1d-9d55-0c3f2d7f1a11",
		Step:          "process-payment",
		Action:        action,
		Direction:     dir,
		Attempt:       attempt,
		Order:         order(),
		Outputs:       map[string]map[string]string{"create-order": {"orderRef": "ord-77"}},
	}
}

type captured struct {
	method string
	path   string
	query  string
	header http.Header
	body   []byte
}

// recorder is a handler that records requests and answers with fn.
type recorder struct {
	mu   sync.Mutex
	reqs []captured
	fn   func(w http.ResponseWriter, r *http.Request)
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, captured{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
	rc.mu.Unlock()
	if rc.fn != nil {
		rc.fn(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"outputs":{"paymentId":"pay-1"}}`)
}

func (rc *recorder) all() []captured {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]captured(nil), rc.reqs...)
}

func newServer(t *testing.T, fn func(w http.ResponseWriter, r *http.Request)) (*httptest.Server, *recorder) {
	t.Helper()
	rc := &recorder{fn: fn}
	ts := httptest.NewServer(rc)
	t.Cleanup(ts.Close)
	return ts, rc
}

func answer(status int, body string, headers ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func newClient() *participants.Client {
	return participants.NewClient(participants.ClientOptions{MaxConnsPerHost: 8})
}

func ep(url string) participants.Endpoint {
	return participants.Endpoint{Name: "payment", URL: url, Timeout: 2 * time.Second}
}

func TestCallSendsTheProtocolRequest(t *testing.T) {
	ts, rc := newServer(t, nil)
	c := participants.NewClient(participants.ClientOptions{
		UserAgent: "saga-operator/test",
		Propagator: func(ctx context.Context, h http.Header) {
			if _, ok := ctx.Deadline(); !ok {
				t.Error("propagator got a context without the call's deadline")
			}
			h.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		},
	})
	e := ep(ts.URL)
	e.BearerToken = "s3cret"
	res := c.Call(context.Background(), e, callReq(sagav1.Forward, 1))
	if res.Outcome != saga.OutcomeOK || res.Outputs["paymentId"] != "pay-1" || res.Error != nil {
		t.Fatalf("result = %+v", res)
	}
	if res.Step != "process-payment" || res.Direction != sagav1.Forward {
		t.Fatalf("result does not name the call: %+v", res)
	}
	reqs := rc.all()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	if r.method != http.MethodPost || r.path != "/saga/v1/actions/charge" {
		t.Fatalf("request line = %s %s", r.method, r.path)
	}
	want := map[string]string{
		"Content-Type":    "application/json",
		"Accept":          "application/json",
		"Idempotency-Key": "6c1f3a0e-5b7e-4c1d-9d55-0c3f2d7f1a11:process-payment:forward",
		"Saga-Id":         "shop/order-1001",
		"Authorization":   "Bearer s3cret",
		"Traceparent":     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"User-Agent":      "saga-operator/test",
	}
	for k, v := range want {
		if got := r.header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if got := r.header.Get("Accept-Encoding"); got != "" {
		t.Errorf("Accept-Encoding = %q, want none", got)
	}
	golden := `{"sagaId":"shop/order-1001","sagaUid":"6c1f3a0e-5b7e-4c1d-9d55-0c3f2d7f1a11",` +
		`"step":"process-payment","action":"charge","direction":"forward","attempt":1,` +
		`"order":{"orderId":"1001","userId":"u-42","currency":"USD",` +
		`"items":[{"sku":"SKU-1","quantity":2,"unitPriceCents":1999}],"totalCents":3998},` +
		`"outputs":{"create-order":{"orderRef":"ord-77"}}}`
	if string(r.body) != golden {
		t.Errorf("body\n got %s\nwant %s", r.body, golden)
	}
}

func TestCallNeverSendsNull(t *testing.T) {
	ts, rc := newServer(t, nil)
	req := callReq(sagav1.Compensate, 3)
	req.Outputs = nil
	req.Order.Items = nil
	if res := newClient().Call(context.Background(), ep(ts.URL), req); res.Outcome != saga.OutcomeOK {
		t.Fatalf("result = %+v", res)
	}
	req.Outputs = map[string]map[string]string{"create-order": nil}
	newClient().Call(context.Background(), ep(ts.URL), req)
	reqs := rc.all()
	for i, want := range []string{`"outputs":{}`, `"outputs":{"create-order":{}}`} {
		b := string(reqs[i].body)
		if !strings.Contains(b, want) || !strings.Contains(b, `"items":[]`) || strings.Contains(b, "null") {
			t.Errorf("body %d = %s, want %s and items []", i, b, want)
		}
		if reqs[i].header.Get("Authorization") != "" {
			t.Errorf("Authorization sent without a token")
		}
	}
	if reqs[0].path != "/saga/v1/actions/refund" ||
		reqs[0].header.Get("Idempotency-Key") != "6c1f3a0e-5b7e-4c1d-9d55-0c3f2d7f1a11:process-payment:compensate" {
		t.Errorf("compensating call: %s key %s", reqs[0].path, reqs[0].header.Get("Idempotency-Key"))
	}
}

func TestKeyIsStableAcrossAttempts(t *testing.T) {
	ts, rc := newServer(t, answer(503, `{}`))
	c := newClient()
	for attempt := int32(1); attempt <= 3; attempt++ {
		c.Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, attempt))
	}
	reqs := rc.all()
	for i, r := range reqs {
		if k := r.header.Get("Idempotency-Key"); k != reqs[0].header.Get("Idempotency-Key") {
			t.Errorf("attempt %d key %q differs", i+1, k)
		}
		var body participants.ActionRequest
		if err := json.Unmarshal(r.body, &body); err != nil || body.Attempt != int32(i+1) {
			t.Errorf("attempt %d body attempt = %d (%v)", i+1, body.Attempt, err)
		}
	}
}

func TestURLJoining(t *testing.T) {
	ts, rc := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/healthz"):
			w.WriteHeader(200)
		case strings.Contains(r.URL.Path, "/sagas/"):
			_, _ = io.WriteString(w, `{"steps":{}}`)
		default:
			_, _ = io.WriteString(w, `{}`)
		}
	})
	c := newClient()
	cases := []struct{ base, prefix string }{
		{ts.URL, ""},
		{ts.URL + "/", ""},
		{ts.URL + "/payment", "/payment"},
		{ts.URL + "/payment/", "/payment"},
		{ts.URL + "/a/b//", "/a/b"},
	}
	for _, tc := range cases {
		before := len(rc.all())
		e := ep(tc.base)
		if res := c.Call(context.Background(), e, callReq(sagav1.Forward, 1)); res.Outcome != saga.OutcomeOK {
			t.Errorf("%s: %+v", tc.base, res)
		}
		if err := c.Health(context.Background(), e); err != nil {
			t.Errorf("%s: health: %v", tc.base, err)
		}
		if _, err := c.State(context.Background(), e, "uid-1"); err != nil {
			t.Errorf("%s: state: %v", tc.base, err)
		}
		got := rc.all()[before:]
		wants := []string{
			tc.prefix + "/saga/v1/actions/charge",
			tc.prefix + "/healthz",
			tc.prefix + "/saga/v1/sagas/uid-1",
		}
		for i, w := range wants {
			if got[i].path != w {
				t.Errorf("base %q: path %q, want %q", tc.base, got[i].path, w)
			}
		}
	}
	// A query in the base URL is kept.
	before := len(rc.all())
	c.Call(context.Background(), ep(ts.URL+"/p?tenant=a"), callReq(sagav1.Forward, 1))
	if r := rc.all()[before]; r.path != "/p/saga/v1/actions/charge" || r.query != "tenant=a" {
		t.Errorf("with query: %s ? %s", r.path, r.query)
	}
}

type want struct {
	outcome    saga.Outcome
	code       string
	status     int32
	retryAfter time.Duration
	outputs    map[string]string
}

func TestAnswerTable(t *testing.T) {
	errBody := `{"error":{"code":"insufficient_funds","message":"balance too low"}}`
	cases := []struct {
		name    string
		status  int
		body    string
		headers []string
		dir     sagav1.Direction
		want    want
	}{
		{"200 outputs", 200, `{"outputs":{"paymentId":"pay-1"}}`, nil, sagav1.Forward, want{saga.OutcomeOK, "", 0, 0, map[string]string{"paymentId": "pay-1"}}},
		{"200 empty object", 200, `{}`, nil, sagav1.Forward, want{outcome: saga.OutcomeOK}},
		{"200 outputs null", 200, `{"outputs":null}`, nil, sagav1.Forward, want{outcome: saga.OutcomeOK}},
		{"200 extra fields", 200, ` {"outputs":{},"status":"done"} `, nil, sagav1.Forward, want{outcome: saga.OutcomeOK}},
		{"200 compensate", 200, `{}`, nil, sagav1.Compensate, want{outcome: saga.OutcomeOK}},
		{"200 compensate ignores outputs", 200, `{"outputs":{"":"x"}}`, nil, sagav1.Compensate, want{outcome: saga.OutcomeOK}},
		{"200 empty body", 200, ``, nil, sagav1.Forward, want{saga.OutcomeTransient, "InvalidResponse", 200, 0, nil}},
		{"200 malformed", 200, `{"outputs":`, nil, sagav1.Forward, want{saga.OutcomeTransient, "InvalidResponse", 200, 0, nil}},
		{"200 not an object", 200, `[1]`, nil, sagav1.Forward, want{saga.OutcomeTransient, "InvalidResponse", 200, 0, nil}},
		{"200 null", 200, `null`, nil, sagav1.Forward, want{saga.OutcomeTransient, "InvalidResponse", 200, 0, nil}},
		{"200 html", 200, `<html>ok</html>`, nil, sagav1.Compensate, want{saga.OutcomeTransient, "InvalidResponse", 200, 0, nil}},
		{"200 outputs not strings", 200, `{"outputs":{"n":1}}`, nil, sagav1.Forward, want{saga.OutcomeInvalidOutputs, "InvalidOutputs", 200, 0, nil}},
		{"200 outputs not object", 200, `{"outputs":"x"}`, nil, sagav1.Forward, want{saga.OutcomeInvalidOutputs, "InvalidOutputs", 200, 0, nil}},
		{"202 retryAfterSeconds", 202, `{"retryAfterSeconds":3}`, nil, sagav1.Forward, want{outcome: saga.OutcomeAccepted, retryAfter: 3 * time.Second}},
		{"202 default", 202, `{}`, nil, sagav1.Forward, want{outcome: saga.OutcomeAccepted, retryAfter: time.Second}},
		{"202 zero", 202, `{"retryAfterSeconds":0}`, nil, sagav1.Compensate, want{outcome: saga.OutcomeAccepted, retryAfter: time.Second}},
		{"202 fraction", 202, `{"retryAfterSeconds":0.25}`, nil, sagav1.Forward, want{outcome: saga.OutcomeAccepted, retryAfter: 250 * time.Millisecond}},
		{"202 header", 202, `{}`, []string{"Retry-After", "7"}, sagav1.Forward, want{outcome: saga.OutcomeAccepted, retryAfter: 7 * time.Second}},
		{"202 body beats header", 202, `{"retryAfterSeconds":2}`, []string{"Retry-After", "7"}, sagav1.Forward, want{outcome: saga.OutcomeAccepted, retryAfter: 2 * time.Second}},
		{"202 huge", 202, `{"retryAfterSeconds":1e300}`, nil, sagav1.Forward, want{outcome: saga.OutcomeAccepted, retryAfter: participants.MaxRetryAfter}},
		{"202 empty body", 202, ``, nil, sagav1.Forward, want{saga.OutcomeTransient, "InvalidResponse", 202, 0, nil}},
		{"409", 409, errBody, nil, sagav1.Forward, want{saga.OutcomeRejected, "insufficient_funds", 409, 0, nil}},
		{"409 compensate", 409, errBody, nil, sagav1.Compensate, want{saga.OutcomeRejected, "insufficient_funds", 409, 0, nil}},
		{"409 no body", 409, ``, nil, sagav1.Forward, want{saga.OutcomeRejected, "HTTP409", 409, 0, nil}},
		{"409 text body", 409, `conflict`, nil, sagav1.Forward, want{saga.OutcomeRejected, "HTTP409", 409, 0, nil}},
		{"409 already compensated", 409, `{"error":{"code":"already_compensated","message":"too late"}}`, nil, sagav1.Forward, want{saga.OutcomeRejected, "already_compensated", 409, 0, nil}},
		{"422", 422, `{"error":{"code":"invalid_sku","message":"no SKU-1"}}`, nil, sagav1.Forward, want{saga.OutcomeRejected, "invalid_sku", 422, 0, nil}},
		{"422 no code", 422, `{"error":{"message":"bad"}}`, nil, sagav1.Forward, want{saga.OutcomeRejected, "HTTP422", 422, 0, nil}},
		{"400", 400, errBody, nil, sagav1.Forward, want{saga.OutcomeRejected, "HTTP400", 400, 0, nil}},
		{"401", 401, ``, nil, sagav1.Forward, want{saga.OutcomeRejected, "HTTP401", 401, 0, nil}},
		{"403", 403, ``, nil, sagav1.Compensate, want{saga.OutcomeRejected, "HTTP403", 403, 0, nil}},
		{"404", 404, `404 page not found`, nil, sagav1.Forward, want{saga.OutcomeRejected, "HTTP404", 404, 0, nil}},
		{"405", 405, ``, nil, sagav1.Forward, want{saga.OutcomeRejected, "HTTP405", 405, 0, nil}},
		{"413", 413, ``, nil, sagav1.Forward, want{saga.OutcomeRejected, "HTTP413", 413, 0, nil}},
		{"410 other 4xx", 410, ``, nil, sagav1.Forward, want{saga.OutcomeRejected, "HTTP410", 410, 0, nil}},
		{"415 other 4xx", 415, ``, nil, sagav1.Forward, want{saga.OutcomeRejected, "HTTP415", 415, 0, nil}},
		{"408", 408, ``, nil, sagav1.Forward, want{saga.OutcomeTransient, "HTTP408", 408, 0, nil}},
		{"425", 425, ``, nil, sagav1.Forward, want{saga.OutcomeTransient, "HTTP425", 425, 0, nil}},
		{"429", 429, ``, []string{"Retry-After", "4"}, sagav1.Forward, want{saga.OutcomeTransient, "HTTP429", 429, 4 * time.Second, nil}},
		{"500", 500, errBody, nil, sagav1.Forward, want{saga.OutcomeTransient, "HTTP500", 500, 0, nil}},
		{"502", 502, ``, nil, sagav1.Forward, want{saga.OutcomeTransient, "HTTP502", 502, 0, nil}},
		{"503", 503, ``, []string{"Retry-After", "5"}, sagav1.Forward, want{saga.OutcomeTransient, "HTTP503", 503, 5 * time.Second, nil}},
		{"503 bad Retry-After", 503, ``, []string{"Retry-After", "soon"}, sagav1.Forward, want{saga.OutcomeTransient, "HTTP503", 503, 0, nil}},
		{"504", 504, ``, nil, sagav1.Compensate, want{saga.OutcomeTransient, "HTTP504", 504, 0, nil}},
		{"507 other 5xx", 507, ``, nil, sagav1.Forward, want{saga.OutcomeTransient, "HTTP507", 507, 0, nil}},
		{"599 other 5xx", 599, ``, nil, sagav1.Forward, want{saga.OutcomeTransient, "HTTP599", 599, 0, nil}},
		{"201 unknown 2xx", 201, `{"outputs":{}}`, nil, sagav1.Forward, want{saga.OutcomeTransient, "HTTP201", 201, 0, nil}},
		{"204 unknown 2xx", 204, ``, nil, sagav1.Forward, want{saga.OutcomeTransient, "HTTP204", 204, 0, nil}},
		{"302 redirect", 302, ``, []string{"Location", "/elsewhere"}, sagav1.Forward, want{saga.OutcomeTransient, "HTTP302", 302, 0, nil}},
		{"308 redirect", 308, ``, []string{"Location", "https://example.invalid/"}, sagav1.Forward, want{saga.OutcomeTransient, "HTTP308", 308, 0, nil}},
	}
	c := newClient()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts, rc := newServer(t, answer(tc.status, tc.body, tc.headers...))
			res := c.Call(context.Background(), ep(ts.URL), callReq(tc.dir, 1))
			check(t, res, tc.want)
			if n := len(rc.all()); n != 1 {
				t.Errorf("%d requests, want 1 (redirects must not be followed)", n)
			}
		})
	}
}

func check(t *testing.T, res saga.Result, w want) {
	t.Helper()
	if res.Outcome != w.outcome {
		t.Fatalf("outcome = %s, want %s (%+v, error %+v)", res.Outcome, w.outcome, res, res.Error)
	}
	switch {
	case w.code == "" && res.Error != nil:
		t.Errorf("error = %+v, want none", res.Error)
	case w.code != "" && res.Error == nil:
		t.Errorf("no error, want code %s", w.code)
	case w.code != "":
		if res.Error.Code != w.code || res.Error.HTTPStatus != w.status {
			t.Errorf("error = %+v, want code %s status %d", res.Error, w.code, w.status)
		}
		if res.Error.Message == "" || len(res.Error.Message) > participants.MaxErrorMessageBytes {
			t.Errorf("message %q", res.Error.Message)
		}
	}
	if res.RetryAfter != w.retryAfter {
		t.Errorf("retryAfter = %s, want %s", res.RetryAfter, w.retryAfter)
	}
	if fmt.Sprint(res.Outputs) != fmt.Sprint(w.outputs) {
		t.Errorf("outputs = %v, want %v", res.Outputs, w.outputs)
	}
}

func TestMessages(t *testing.T) {
	c := newClient()
	ts, _ := newServer(t, answer(404, `{"error":{"code":"no_such_action","message":"charge2"}}`))
	res := c.Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, 1))
	if got, w := res.Error.Message, "HTTP 404 Not Found: no_such_action: charge2"; got != w {
		t.Errorf("404 message = %q, want %q", got, w)
	}
	ts, _ = newServer(t, answer(409, `{"error":{"code":"insufficient_funds","message":"balance\ntoo   low"}}`))
	res = c.Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, 1))
	if got := res.Error.Message; got != "balance too low" {
		t.Errorf("409 message = %q", got)
	}
	long := strings.Repeat("é", 2000) // 4000 bytes, two per character
	ts, _ = newServer(t, answer(409, `{"error":{"code":"`+strings.Repeat("c", 300)+`","message":"`+long+`"}}`))
	res = c.Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, 1))
	if m := res.Error.Message; len(m) > 512 || len(m) < 510 || !utf8.ValidString(m) {
		t.Errorf("message of %d bytes, valid %v", len(m), utf8.ValidString(m))
	}
	if len(res.Error.Code) != participants.MaxErrorCodeBytes {
		t.Errorf("code of %d bytes", len(res.Error.Code))
	}
}

func TestRetryAfterDate(t *testing.T) {
	date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	ts, _ := newServer(t, answer(503, ``, "Retry-After", date))
	res := newClient().Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, 1))
	if res.Outcome != saga.OutcomeTransient || res.RetryAfter < 85*time.Second || res.RetryAfter > 91*time.Second {
		t.Fatalf("result %+v", res)
	}
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	ts, _ = newServer(t, answer(429, ``, "Retry-After", past))
	res = newClient().Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, 1))
	if res.Outcome != saga.OutcomeTransient || res.RetryAfter != 0 {
		t.Fatalf("past date: %+v", res)
	}
	ts, _ = newServer(t, answer(202, `{}`, "Retry-After", date))
	res = newClient().Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, 1))
	if res.Outcome != saga.OutcomeAccepted || res.RetryAfter < 85*time.Second {
		t.Fatalf("202 with date: %+v", res)
	}
}

func outputsBody(n, keyLen, valLen int) string {
	m := map[string]string{}
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("k%02d", i)
		k += strings.Repeat("x", max(0, keyLen-len(k)))
		m[k] = strings.Repeat("v", valLen)
	}
	b, _ := json.Marshal(map[string]any{"outputs": m})
	return string(b)
}

func TestOutputLimits(t *testing.T) {
	cases := []struct {
		name string
		body string
		ok   bool
	}{
		{"16 outputs", outputsBody(16, 5, 10), true},
		{"17 outputs", outputsBody(17, 5, 10), false},
		{"key of 63", outputsBody(1, 63, 1), true},
		{"key of 64", outputsBody(1, 64, 1), false},
		{"key of 63 characters, more bytes", `{"outputs":{"` + strings.Repeat("é", 63) + `":"v"}}`, true},
		{"empty key", `{"outputs":{"":"v"}}`, false},
		{"value of 256", outputsBody(1, 5, 256), true},
		{"value of 257", outputsBody(1, 5, 257), false},
		{"empty value", `{"outputs":{"k":""}}`, true},
	}
	c := newClient()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts, _ := newServer(t, answer(200, tc.body))
			res := c.Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, 1))
			if tc.ok {
				if res.Outcome != saga.OutcomeOK || res.Outputs == nil {
					t.Fatalf("result %+v %+v", res, res.Error)
				}
				return
			}
			if res.Outcome != saga.OutcomeInvalidOutputs || res.Error == nil ||
				res.Error.Code != "InvalidOutputs" || res.Error.HTTPStatus != 200 || res.Outputs != nil {
				t.Fatalf("result %+v %+v", res, res.Error)
			}
		})
	}
}

func TestResponseSizeLimit(t *testing.T) {
	c := newClient()
	// Exactly 64 KiB is fine.
	pad := participants.MaxResponseBytes - len(`{"outputs":{}}`)
	exact := `{"outputs":{}` + strings.Repeat(" ", pad) + `}`
	ts, _ := newServer(t, answer(200, exact))
	if res := c.Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, 1)); res.Outcome != saga.OutcomeOK {
		t.Fatalf("64 KiB: %+v %+v", res, res.Error)
	}
	// One byte more is not, whatever the status.
	for _, status := range []int{200, 409, 503} {
		ts, _ := newServer(t, answer(status, exact+" "))
		res := c.Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, 1))
		check(t, res, want{outcome: saga.OutcomeTransient, code: "ResponseTooLarge", status: int32(status)})
	}
	// A streamed body without a length is cut after the limit, never read whole.
	var written atomic.Int64
	ts, _ = newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		chunk := []byte(strings.Repeat("x", 32<<10))
		for i := 0; i < 8192; i++ { // 256 MiB if anyone read it all
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	start := time.Now()
	res := c.Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, 1))
	check(t, res, want{outcome: saga.OutcomeTransient, code: "ResponseTooLarge", status: 200})
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s", d)
	}
	ts.CloseClientConnections()
	if w := written.Load(); w > 64<<20 {
		t.Errorf("server wrote %d bytes: the client kept reading", w)
	}
}

func TestSlowAnswerTimesOut(t *testing.T) {
	release := make(chan struct{})
	ts, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-release:
		}
		_, _ = io.WriteString(w, `{}`)
	})
	defer close(release)
	e := ep(ts.URL)
	e.Timeout = 150 * time.Millisecond
	start := time.Now()
	res := newClient().Call(context.Background(), e, callReq(sagav1.Forward, 1))
	elapsed := time.Since(start)
	check(t, res, want{outcome: saga.OutcomeTransient, code: "Timeout"})
	if elapsed < 150*time.Millisecond || elapsed > 3*time.Second {
		t.Errorf("took %s", elapsed)
	}
	if !strings.Contains(res.Error.Message, "150ms") {
		t.Errorf("message %q", res.Error.Message)
	}
}

func TestSlowBodyTimesOut(t *testing.T) {
	ts, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		_, _ = io.WriteString(w, `{"outputs":`)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	})
	e := ep(ts.URL)
	e.Timeout = 150 * time.Millisecond
	res := newClient().Call(context.Background(), e, callReq(sagav1.Forward, 1))
	check(t, res, want{outcome: saga.OutcomeTransient, code: "Timeout"})
}

// A server that accepts connections and never answers.
func hangingListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

func TestHangingServer(t *testing.T) {
	e := ep(hangingListener(t))
	e.Timeout = 200 * time.Millisecond
	c := newClient()
	start := time.Now()
	res := c.Call(context.Background(), e, callReq(sagav1.Forward, 1))
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("call took %s", d)
	}
	check(t, res, want{outcome: saga.OutcomeTransient, code: "Timeout"})
	if err := c.Health(context.Background(), e); !errors.Is(err, participants.ErrUnreachable) {
		t.Errorf("health: %v", err)
	}
	if _, err := c.State(context.Background(), e, "uid"); !errors.Is(err, participants.ErrUnreachable) {
		t.Errorf("state: %v", err)
	}
}

func TestParentDeadlineAndCancel(t *testing.T) {
	e := ep(hangingListener(t))
	e.Timeout = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	res := newClient().Call(ctx, e, callReq(sagav1.Forward, 1))
	check(t, res, want{outcome: saga.OutcomeTransient, code: "Timeout"})

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	res = newClient().Call(ctx, e, callReq(sagav1.Forward, 1))
	check(t, res, want{outcome: saga.OutcomeTransient, code: "ConnectionError"})
}

func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "http://" + addr
}

func TestConnectionRefused(t *testing.T) {
	e := ep(closedAddr(t))
	c := newClient()
	res := c.Call(context.Background(), e, callReq(sagav1.Forward, 1))
	check(t, res, want{outcome: saga.OutcomeTransient, code: "ConnectionError"})
	if err := c.Health(context.Background(), e); !errors.Is(err, participants.ErrUnreachable) {
		t.Errorf("health: %v", err)
	}
	if _, err := c.State(context.Background(), e, "uid"); !errors.Is(err, participants.ErrUnreachable) {
		t.Errorf("state: %v", err)
	}
}

func TestClosedWithoutAnswer(t *testing.T) {
	ts, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	})
	res := newClient().Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, 1))
	check(t, res, want{outcome: saga.OutcomeTransient, code: "ConnectionError"})
}

func TestInvalidRequestsAreNotSent(t *testing.T) {
	ts, rc := newServer(t, nil)
	c := newClient()
	overflow := callReq(sagav1.Forward, 1)
	overflow.Order.Items = []sagav1.OrderItem{
		{SKU: "a", Quantity: 1000000, UnitPriceCents: 100000000000},
	}
	for i := 0; i < 99; i++ {
		overflow.Order.Items = append(overflow.Order.Items, overflow.Order.Items[0])
	}
	badDir := callReq("sideways", 1)
	noAction := callReq(sagav1.Forward, 1)
	noAction.Action = ""
	cases := map[string]struct {
		url string
		req participants.CallRequest
	}{
		"scheme":    {"ftp://example.com", callReq(sagav1.Forward, 1)},
		"no host":   {"http:///path", callReq(sagav1.Forward, 1)},
		"user info": {"http://u:p@" + strings.TrimPrefix(ts.URL, "http://"), callReq(sagav1.Forward, 1)},
		"garbage":   {"http://[::1", callReq(sagav1.Forward, 1)},
		"direction": {ts.URL, badDir},
		"action":    {ts.URL, noAction},
		"overflow":  {ts.URL, overflow},
	}
	for name, tc := range cases {
		res := c.Call(context.Background(), ep(tc.url), tc.req)
		if res.Outcome != saga.OutcomeRejected || res.Error == nil || res.Error.Code != "InvalidRequest" {
			t.Errorf("%s: %+v %+v", name, res, res.Error)
		}
	}
	if n := len(rc.all()); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

func TestConnectionsAreReused(t *testing.T) {
	var mu sync.Mutex
	conns := map[string]bool{}
	i := 0
	bodies := []struct {
		status int
		body   string
	}{
		{200, `{"outputs":{"a":"b"}}`},
		{409, `{"error":{"code":"x","message":"y"}}`},
		{503, strings.Repeat("e", 2000)},
		{202, `{"retryAfterSeconds":1}`},
		{200, `not json`},
		{404, `404 page not found`},
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conns[r.RemoteAddr] = true
		b := bodies[i%len(bodies)]
		i++
		mu.Unlock()
		w.WriteHeader(b.status)
		_, _ = io.WriteString(w, b.body)
	}))
	ts.Start()
	defer ts.Close()
	c := newClient()
	for n := 0; n < 30; n++ {
		c.Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, 1))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 1 {
		t.Errorf("%d connections for 30 sequential calls, want 1", len(conns))
	}
}

func TestHTTP2OverTLS(t *testing.T) {
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			w.WriteHeader(500)
			return
		}
		_, _ = io.WriteString(w, `{"outputs":{"proto":"`+r.Proto+`"}}`)
	}))
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	c := participants.NewClient(participants.ClientOptions{TLSConfig: &tls.Config{RootCAs: pool}})
	res := c.Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, 1))
	if res.Outcome != saga.OutcomeOK || res.Outputs["proto"] != "HTTP/2.0" {
		t.Fatalf("result %+v %+v", res, res.Error)
	}
	// Without the CA the TLS handshake fails: a connection error.
	res = newClient().Call(context.Background(), ep(ts.URL), callReq(sagav1.Forward, 1))
	check(t, res, want{outcome: saga.OutcomeTransient, code: "ConnectionError"})
}

func TestHealth(t *testing.T) {
	c := newClient()
	ts, rc := newServer(t, answer(200, `ok`))
	e := ep(ts.URL)
	e.BearerToken = "t"
	if err := c.Health(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if r := rc.all()[0]; r.method != http.MethodGet || r.path != "/healthz" || r.header.Get("Authorization") != "Bearer t" {
		t.Errorf("request %+v", r)
	}
	ts, _ = newServer(t, answer(503, ``))
	err := c.Health(context.Background(), ep(ts.URL))
	if err == nil || !strings.Contains(err.Error(), "503") || errors.Is(err, participants.ErrUnreachable) {
		t.Errorf("503: %v", err)
	}
}

func TestState(t *testing.T) {
	c := newClient()
	ts, rc := newServer(t, answer(200, `{"steps":{"process-payment":{"state":"applied","detail":"captured 3998 USD"},"x":{"state":"compensated"}}}`))
	states, err := c.State(context.Background(), ep(ts.URL), "6c1f3a0e")
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 2 || states["process-payment"] != (participants.StepState{State: "applied", Detail: "captured 3998 USD"}) ||
		states["x"].State != "compensated" {
		t.Errorf("states %+v", states)
	}
	if r := rc.all()[0]; r.method != http.MethodGet || r.path != "/saga/v1/sagas/6c1f3a0e" {
		t.Errorf("request %s %s", r.method, r.path)
	}

	for _, body := range []string{`{}`, `{"steps":null}`} {
		ts, _ = newServer(t, answer(200, body))
		states, err = c.State(context.Background(), ep(ts.URL), "u")
		if err != nil || states == nil || len(states) != 0 {
			t.Errorf("%s: %v %v", body, states, err)
		}
	}

	ts, _ = newServer(t, answer(404, `404 page not found`))
	if _, err := c.State(context.Background(), ep(ts.URL), "u"); !errors.Is(err, participants.ErrQueryNotSupported) {
		t.Errorf("404: %v", err)
	}
	ts, _ = newServer(t, answer(500, ``))
	if _, err := c.State(context.Background(), ep(ts.URL), "u"); !errors.Is(err, participants.ErrUnreachable) || errors.Is(err, participants.ErrQueryNotSupported) {
		t.Errorf("500: %v", err)
	}
	for _, body := range []string{`nope`, ``, `{"steps":{"a":"applied"}}`, `{"steps":{}}` + strings.Repeat(" ", participants.MaxResponseBytes)} {
		ts, _ = newServer(t, answer(200, body))
		_, err := c.State(context.Background(), ep(ts.URL), "u")
		if !errors.Is(err, participants.ErrUnreachable) || !errors.Is(err, participants.ErrInvalidResponse) {
			t.Errorf("body %.20q: %v", body, err)
		}
	}
	if _, err := c.State(context.Background(), ep(ts.URL), ""); err == nil {
		t.Error("empty uid accepted")
	}
}

func TestConcurrentCalls(t *testing.T) {
	ts, _ := newServer(t, nil)
	c := participants.NewClient(participants.ClientOptions{MaxConnsPerHost: 16})
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			req := callReq(sagav1.Forward, 1)
			req.Step = fmt.Sprintf("s%d", i)
			for j := 0; j < 10; j++ {
				if res := c.Call(context.Background(), ep(ts.URL), req); res.Outcome != saga.OutcomeOK {
					bad.Add(1)
				}
			}
		}(i)
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Errorf("%d calls failed", n)
	}
}

func TestNewActionRequest(t *testing.T) {
	req := callReq(sagav1.Forward, 2)
	req.Order.Items = append(req.Order.Items, sagav1.OrderItem{SKU: "SKU-2", Quantity: 3, UnitPriceCents: 0}, sagav1.OrderItem{SKU: "SKU-3", Quantity: 1, UnitPriceCents: 5})
	ar, err := participants.NewActionRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	if ar.Order.TotalCents != 2*1999+5 || ar.SagaID != "shop/order-1001" || ar.Direction != "forward" || ar.Attempt != 2 {
		t.Errorf("%+v", ar)
	}
	// The request's outputs are copied, not shared.
	ar.Outputs["create-order"]["orderRef"] = "changed"
	if req.Outputs["create-order"]["orderRef"] != "ord-77" {
		t.Error("outputs shared with the caller")
	}
}
