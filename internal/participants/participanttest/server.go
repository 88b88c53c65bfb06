// Package participanttest is a participant for tests: an httptest server
// that implements the callee side of PROTOCOL.md, its five guarantees
// included, with behaviour and faults scriptable per action. The
// controller's envtest suites and load tests use it; it is safe for
// concurrent use and cheap per call.
//
// What it guarantees, as a conforming participant must:
//
//  1. The first call with an idempotency key decides the answer (status and
//     body); every later call with that key gets the same bytes back and
//     applies nothing.
//  2. The decision, the ledger change and the key record are made together
//     under one lock, before the answer is written.
//  3. A compensating call for a step it never applied answers 200 and
//     records the step as compensated.
//  4. A forward call for a step already compensated is refused with 409
//     already_compensated (and that refusal is the key's decision).
//  5. A rejection leaves nothing in place.
//
// Faults break none of them: scripted and random transient answers are not
// decisions (nothing is applied, nothing recorded under the key), lost
// replies apply and record first and only then drop the connection, and a
// hanging call applies nothing.
//
// Requests that break the protocol (wrong method, missing or inconsistent
// headers, a body that is not the protocol's, outputs null, a wrong total)
// are answered 400 with code bad_request, so a test of the caller sees them.
package participanttest

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sagaops/saga-operator/internal/participants"
)

// maxRequestBytes bounds a request body the server reads.
const maxRequestBytes = 1 << 20

// Codes the server sends in error bodies of its own.
const (
	CodeBadRequest   = "bad_request"
	CodeUnauthorized = "unauthorized"
	CodeUnavailable  = "unavailable"
	CodeNotSupported = "not_supported"
)

// Rejection is a definitive refusal: a 409 or 422 with an error body.
type Rejection struct {
	// Status is 409 (default when 0) or 422.
	Status  int
	Code    string
	Message string
}

// RejectAlways returns a Reject function that refuses every call.
func RejectAlways(status int, code, message string) func(participants.ActionRequest) *Rejection {
	r := &Rejection{Status: status, Code: code, Message: message}
	return func(participants.ActionRequest) *Rejection { return r }
}

// Answer is one scripted answer (Behavior.Script).
//
// A zero Answer processes the call normally. Hang, Drop and LostReply take
// precedence over Status, in that order. A non-zero Status is written as a
// raw answer that is not a decision: nothing is applied and nothing is
// recorded under the key, so the next call of the key is processed afresh.
// Use it for transient answers (503, 429, ...) and for 202; a definitive
// rejection belongs in Behavior.Reject, which is recorded and replayed.
type Answer struct {
	// Status of a raw answer; 0 processes the call.
	Status int
	// RetryAfterSeconds goes in a 202's body {"retryAfterSeconds": N} when
	// positive (a 202 without it has the body {}).
	RetryAfterSeconds int
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter string
	// Body, when set, replaces the default body of a raw answer
	// (e.g. malformed JSON, an oversized body).
	Body string
	// Hang blocks until the caller gives up (or the server closes); nothing
	// is applied.
	Hang bool
	// Drop closes the connection without processing or answering.
	Drop bool
	// LostReply processes the call normally (applies the effect, records the
	// key), then closes the connection without answering.
	LostReply bool
}

// Behavior is how the server treats calls of one action.
type Behavior struct {
	// Outputs returns the outputs of a successful call (nil: none). It may
	// be called more than once for a key under concurrency (only the
	// deciding call's result is kept), so it must be a pure function of the
	// request; it runs without the server's lock held.
	Outputs func(req participants.ActionRequest) map[string]string
	// Reject, when it returns non-nil, refuses the call definitively
	// (recorded under the key and replayed; nothing applied). Same purity
	// rule as Outputs. See RejectAlways.
	Reject func(req participants.ActionRequest) *Rejection
	// Script answers the first len(Script) calls of each key of this
	// action, before the normal behaviour. Once a key is decided, replays
	// take precedence over the rest of the script.
	Script []Answer
	// TransientRate is the probability that a call (a replay included) is
	// answered 503 before anything is looked at or applied.
	TransientRate float64
	// LostReplyRate is the probability that a processed call's answer is
	// lost: the effect is applied and the key recorded, then the connection
	// is closed without answering. On a kept-alive connection net/http
	// resends such a call by itself (it carries an Idempotency-Key), so the
	// caller may see the replayed answer instead of an error.
	LostReplyRate float64
	// Hang blocks every call until the caller gives up; nothing is applied.
	Hang bool
	// Latency delays every call before it is processed. The call is
	// processed after the delay even when the caller has given up meanwhile
	// (as a real service would), so a caller's timeout can leave an effect
	// in place.
	Latency time.Duration
}

// Recorded is one request as the server received it.
type Recorded struct {
	// Seq numbers requests from 1 in order of arrival.
	Seq            int
	Time           time.Time
	Method         string
	Path           string
	IdempotencyKey string
	SagaID         string
	Authorization  string
	Traceparent    string
	ContentType    string
	Accept         string
	UserAgent      string
	// Header is a copy of all headers.
	Header http.Header
	// Body is the decoded ActionRequest (zero for other requests);
	// RawBody the bytes as received.
	Body    participants.ActionRequest
	RawBody []byte
	// Status is the status answered; 0 when no answer was written (a
	// dropped, lost or hanging call).
	Status int
	// Replayed is true when the answer was the key's recorded decision.
	Replayed bool
}

type decision struct {
	status int
	body   []byte
}

type ledgerEntry struct {
	state  string
	detail string
}

// Server is the test participant. Make one with NewServer.
type Server struct {
	ts        *httptest.Server
	closing   chan struct{}
	closeOnce sync.Once

	mu             sync.Mutex
	behaviors      map[string]Behavior
	decided        map[string]decision
	calls          map[string]int
	applied        map[string]int
	ledger         map[string]map[string]ledgerEntry
	requests       []Recorded
	stateSupported bool
	healthy        bool
	bearer         string
	rng            *rand.Rand
}

// NewServer starts a participant on a local port. Every action succeeds with
// no outputs until SetBehavior says otherwise; the state query is supported,
// /healthz answers 200, no token is required, and the random faults draw
// from a fixed seed (SetSeed).
func NewServer() *Server {
	s := &Server{
		closing:        make(chan struct{}),
		behaviors:      map[string]Behavior{},
		decided:        map[string]decision{},
		calls:          map[string]int{},
		applied:        map[string]int{},
		ledger:         map[string]map[string]ledgerEntry{},
		stateSupported: true,
		healthy:        true,
		rng:            rand.New(rand.NewPCG(1, 1)),
	}
	s.ts = httptest.NewServer(s)
	return s
}

// URL is the base URL to put in a Participant's spec.url.
func (s *Server) URL() string { return s.ts.URL }

// Close releases hanging and delayed calls, closes every connection and
// stops the server. It may be called more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.ts.CloseClientConnections()
		s.ts.Close()
	})
}

// SetBehavior sets how calls of action are treated from now on.
func (s *Server) SetBehavior(action string, b Behavior) {
	b.Script = append([]Answer(nil), b.Script...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.behaviors[action] = b
}

// SetStateSupported false makes the state query answer 404 (not implemented).
func (s *Server) SetStateSupported(ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stateSupported = ok
}

// SetHealthy false makes /healthz answer 503.
func (s *Server) SetHealthy(ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.healthy = ok
}

// RequireBearer makes action calls and state queries without
// "Authorization: Bearer <token>" answer 401 (before anything else is
// looked at); "" turns the check off. /healthz never requires it.
func (s *Server) RequireBearer(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bearer = token
}

// SetSeed reseeds the random faults.
func (s *Server) SetSeed(seed uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rng = rand.New(rand.NewPCG(seed, seed))
}

// Tamper sets the ledger state of a step out of band (applied, compensated,
// none or anything else, for tests of the checker); "" removes the step so
// that the state query leaves it out. Key records are untouched.
func (s *Server) Tamper(sagaUID, step, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if state == "" {
		delete(s.ledger[sagaUID], step)
		return
	}
	s.setLedger(sagaUID, step, state, "tampered")
}

// ForgetKey drops the recorded decision of a key, as a restore from an old
// backup would; with Tamper(..., "none") it simulates a participant that lost
// both an effect and its key. The next call of the key is processed afresh
// (AppliedCount keeps counting; the script of the action is not restarted).
func (s *Server) ForgetKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.decided, key)
}

// Requests returns every request received so far, in order of arrival.
func (s *Server) Requests() []Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Recorded, len(s.requests))
	copy(out, s.requests)
	return out
}

// Calls returns the action calls that carried key, in order.
func (s *Server) Calls(key string) []Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Recorded
	for _, r := range s.requests {
		if r.IdempotencyKey == key && strings.HasPrefix(r.Path, participants.ActionPathPrefix) {
			out = append(out, r)
		}
	}
	return out
}

// ClearRequests forgets the recorded requests (not the ledger or the keys),
// to bound memory in long load tests.
func (s *Server) ClearRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// AppliedCount is how many times the effect of key was applied: a forward
// key counts its effect, a compensating key its undo (or its record of a
// step compensated before its forward call). Rejections and replays count
// nothing. It is at most 1 unless ForgetKey made the server forget the key.
func (s *Server) AppliedCount(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied[key]
}

// Decided returns the recorded decision of key.
func (s *Server) Decided(key string) (status int, body []byte, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.decided[key]
	return d.status, append([]byte(nil), d.body...), ok
}

// Ledger returns a copy of the ledger: saga UID, then step, then state.
func (s *Server) Ledger() map[string]map[string]participants.StepState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]map[string]participants.StepState, len(s.ledger))
	for uid, steps := range s.ledger {
		m := make(map[string]participants.StepState, len(steps))
		for step, e := range steps {
			m[step] = participants.StepState{State: e.state, Detail: e.detail}
		}
		out[uid] = m
	}
	return out
}

// StepState is the ledger state of one step; none when it is not there.
func (s *Server) StepState(sagaUID, step string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.ledger[sagaUID][step]; ok {
		return e.state
	}
	return participants.StateNone
}

// setLedger needs s.mu held.
func (s *Server) setLedger(uid, step, state, detail string) {
	steps := s.ledger[uid]
	if steps == nil {
		steps = map[string]ledgerEntry{}
		s.ledger[uid] = steps
	}
	steps[step] = ledgerEntry{state: state, detail: detail}
}

// ServeHTTP routes the protocol's paths.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == participants.HealthPath:
		s.serveHealth(w, r)
	case strings.HasPrefix(p, participants.ActionPathPrefix):
		s.serveAction(w, r, strings.TrimPrefix(p, participants.ActionPathPrefix))
	case strings.HasPrefix(p, participants.StatePathPrefix):
		s.serveState(w, r, strings.TrimPrefix(p, participants.StatePathPrefix))
	default:
		idx := s.record(r, nil, participants.ActionRequest{})
		s.writeError(w, idx, http.StatusNotFound, "not_found", "no such path", false)
	}
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	idx := s.record(r, nil, participants.ActionRequest{})
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.writeError(w, idx, http.StatusMethodNotAllowed, CodeBadRequest, "use GET", false)
		return
	}
	s.mu.Lock()
	healthy := s.healthy
	s.mu.Unlock()
	if !healthy {
		s.writeError(w, idx, http.StatusServiceUnavailable, CodeUnavailable, "not ready", false)
		return
	}
	s.write(w, idx, http.StatusOK, []byte(`{"status":"ok"}`), "", false)
}

func (s *Server) serveState(w http.ResponseWriter, r *http.Request, uid string) {
	idx := s.record(r, nil, participants.ActionRequest{})
	if !s.authorized(r) {
		s.writeError(w, idx, http.StatusUnauthorized, CodeUnauthorized, "bearer token required", false)
		return
	}
	if r.Method != http.MethodGet {
		s.writeError(w, idx, http.StatusMethodNotAllowed, CodeBadRequest, "use GET", false)
		return
	}
	s.mu.Lock()
	if !s.stateSupported {
		s.mu.Unlock()
		s.writeError(w, idx, http.StatusNotFound, CodeNotSupported, "state query not implemented", false)
		return
	}
	resp := participants.StateResponse{Steps: map[string]participants.StepState{}}
	for step, e := range s.ledger[uid] {
		resp.Steps[step] = participants.StepState{State: e.state, Detail: e.detail}
	}
	s.mu.Unlock()
	body, _ := json.Marshal(resp)
	s.write(w, idx, http.StatusOK, body, "", false)
}

func (s *Server) authorized(r *http.Request) bool {
	s.mu.Lock()
	token := s.bearer
	s.mu.Unlock()
	return token == "" || r.Header.Get("Authorization") == "Bearer "+token
}

func (s *Server) serveAction(w http.ResponseWriter, r *http.Request, action string) {
	raw, readErr := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes+1))
	var req participants.ActionRequest
	decodeErr := json.Unmarshal(raw, &req)
	idx := s.record(r, raw, req)

	if !s.authorized(r) {
		s.writeError(w, idx, http.StatusUnauthorized, CodeUnauthorized, "bearer token required", false)
		return
	}
	if r.Method != http.MethodPost {
		s.writeError(w, idx, http.StatusMethodNotAllowed, CodeBadRequest, "use POST", false)
		return
	}
	switch {
	case readErr != nil:
		s.drop(w) // the caller went away
		return
	case len(raw) > maxRequestBytes:
		s.writeError(w, idx, http.StatusRequestEntityTooLarge, CodeBadRequest, "body too large", false)
		return
	case decodeErr != nil:
		s.writeError(w, idx, http.StatusBadRequest, CodeBadRequest, "body: "+decodeErr.Error(), false)
		return
	}
	if msg := checkRequest(r, action, raw, req); msg != "" {
		s.writeError(w, idx, http.StatusBadRequest, CodeBadRequest, msg, false)
		return
	}
	key := r.Header.Get(participants.HeaderIdempotencyKey)

	s.mu.Lock()
	b := s.behaviors[action]
	n := s.calls[key]
	s.calls[key] = n + 1
	s.mu.Unlock()
	var ans Answer
	if n < len(b.Script) {
		ans = b.Script[n]
	}

	if b.Latency > 0 && !s.sleep(b.Latency) {
		s.drop(w)
		return
	}
	switch {
	case b.Hang || ans.Hang:
		select {
		case <-r.Context().Done():
		case <-s.closing:
		}
		s.drop(w)
		return
	case ans.Drop:
		s.drop(w)
		return
	case ans.Status != 0 && !ans.LostReply:
		s.writeRaw(w, idx, ans)
		return
	}
	if s.chance(b.TransientRate) {
		s.writeError(w, idx, http.StatusServiceUnavailable, CodeUnavailable, "random transient failure", false)
		return
	}
	d, replayed := s.decide(key, action, req, b)
	if ans.LostReply || s.chance(b.LostReplyRate) {
		s.drop(w)
		return
	}
	s.write(w, idx, d.status, d.body, "", replayed)
}

// decide returns the key's decision, making it if it is the first call.
func (s *Server) decide(key, action string, req participants.ActionRequest, b Behavior) (decision, bool) {
	s.mu.Lock()
	d, ok := s.decided[key]
	s.mu.Unlock()
	if ok {
		return d, true
	}
	// User functions run without the lock.
	var rej *Rejection
	if b.Reject != nil {
		rej = b.Reject(req)
	}
	var outputs map[string]string
	if rej == nil && b.Outputs != nil {
		outputs = b.Outputs(req)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.decided[key]; ok {
		return d, true
	}
	e, known := s.ledger[req.SagaUID][req.Step]
	switch {
	case req.Direction == participants.DirectionForward && known && e.state == participants.StateCompensated:
		d = errorDecision(http.StatusConflict, participants.CodeAlreadyCompensated,
			"step "+req.Step+" was compensated before this call")
	case rej != nil:
		status := rej.Status
		if status == 0 {
			status = http.StatusConflict
		}
		d = errorDecision(status, rej.Code, rej.Message)
		if !known {
			s.setLedger(req.SagaUID, req.Step, participants.StateNone, action+" rejected: "+rej.Code)
		}
	case req.Direction == participants.DirectionForward:
		s.setLedger(req.SagaUID, req.Step, participants.StateApplied, "applied by "+action)
		s.applied[key]++
		d = outputsDecision(outputs)
	default:
		detail := "compensated by " + action
		if !known || e.state != participants.StateApplied {
			detail += " before any forward effect"
		}
		s.setLedger(req.SagaUID, req.Step, participants.StateCompensated, detail)
		s.applied[key]++
		d = outputsDecision(outputs)
	}
	s.decided[key] = d
	return d, false
}

func outputsDecision(outputs map[string]string) decision {
	if len(outputs) == 0 {
		return decision{status: http.StatusOK, body: []byte(`{}`)}
	}
	body, _ := json.Marshal(participants.ActionResponse{Outputs: outputs})
	return decision{status: http.StatusOK, body: body}
}

func errorDecision(status int, code, message string) decision {
	body, _ := json.Marshal(participants.ErrorBody{Error: participants.ErrorDetail{Code: code, Message: message}})
	return decision{status: status, body: body}
}

// checkRequest checks an action call against PROTOCOL.md; "" when it conforms.
func checkRequest(r *http.Request, action string, raw []byte, req participants.ActionRequest) string {
	h := r.Header
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return "Content-Type must be application/json, got " + strconv.Quote(ct)
	}
	if req.Direction != participants.DirectionForward && req.Direction != participants.DirectionCompensate {
		return "direction must be forward or compensate, got " + strconv.Quote(req.Direction)
	}
	if req.SagaUID == "" || req.Step == "" || req.SagaID == "" {
		return "sagaId, sagaUid and step are required"
	}
	if req.Action != action {
		return "body action " + strconv.Quote(req.Action) + " does not match the path's " + strconv.Quote(action)
	}
	want := participants.IdempotencyKey(req.SagaUID, req.Step, req.Direction)
	if got := h.Get(participants.HeaderIdempotencyKey); got != want {
		return "Idempotency-Key must be " + strconv.Quote(want) + ", got " + strconv.Quote(got)
	}
	if got := h.Get(participants.HeaderSagaID); got != req.SagaID {
		return "Saga-Id must be " + strconv.Quote(req.SagaID) + ", got " + strconv.Quote(got)
	}
	if req.Attempt < 1 {
		return "attempt counts from 1"
	}
	var probe struct {
		Outputs json.RawMessage `json:"outputs"`
		Order   struct {
			Items json.RawMessage `json:"items"`
		} `json:"order"`
	}
	_ = json.Unmarshal(raw, &probe)
	if o := bytes.TrimSpace(probe.Outputs); len(o) == 0 || o[0] != '{' {
		return "outputs must be a JSON object"
	}
	if it := bytes.TrimSpace(probe.Order.Items); len(it) == 0 || it[0] != '[' {
		return "order.items must be a JSON array"
	}
	var total int64
	for _, it := range req.Order.Items {
		total += it.Quantity * it.UnitPriceCents
	}
	if total != req.Order.TotalCents {
		return "order.totalCents is " + strconv.FormatInt(req.Order.TotalCents, 10) +
			", the items sum to " + strconv.FormatInt(total, 10)
	}
	return ""
}

// record appends a request and returns its index.
func (s *Server) record(r *http.Request, raw []byte, req participants.ActionRequest) int {
	h := r.Header
	rec := Recorded{
		Time:           time.Now(),
		Method:         r.Method,
		Path:           r.URL.Path,
		IdempotencyKey: h.Get(participants.HeaderIdempotencyKey),
		SagaID:         h.Get(participants.HeaderSagaID),
		Authorization:  h.Get("Authorization"),
		Traceparent:    h.Get("traceparent"),
		ContentType:    h.Get("Content-Type"),
		Accept:         h.Get("Accept"),
		UserAgent:      h.Get("User-Agent"),
		Header:         h.Clone(),
		Body:           req,
		RawBody:        raw,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec.Seq = len(s.requests) + 1
	s.requests = append(s.requests, rec)
	return len(s.requests) - 1
}

// setStatus notes the answer of request idx (which ClearRequests may have
// dropped).
func (s *Server) setStatus(idx, status int, replayed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if idx < len(s.requests) {
		s.requests[idx].Status = status
		s.requests[idx].Replayed = replayed
	}
}

func (s *Server) write(w http.ResponseWriter, idx, status int, body []byte, retryAfter string, replayed bool) {
	s.setStatus(idx, status, replayed)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if retryAfter != "" {
		h.Set("Retry-After", retryAfter)
	}
	if replayed {
		h.Set("Idempotent-Replayed", "true")
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (s *Server) writeError(w http.ResponseWriter, idx, status int, code, message string, replayed bool) {
	d := errorDecision(status, code, message)
	s.write(w, idx, d.status, d.body, "", replayed)
}

func (s *Server) writeRaw(w http.ResponseWriter, idx int, a Answer) {
	body := []byte(a.Body)
	if a.Body == "" {
		switch {
		case a.Status == http.StatusAccepted && a.RetryAfterSeconds > 0:
			body = []byte(`{"retryAfterSeconds":` + strconv.Itoa(a.RetryAfterSeconds) + `}`)
		case a.Status >= 200 && a.Status < 300:
			body = []byte(`{}`)
		default:
			body = errorDecision(a.Status, "scripted", "scripted answer "+strconv.Itoa(a.Status)).body
		}
	}
	s.write(w, idx, a.Status, body, a.RetryAfter, false)
}

// drop closes the connection without an answer.
func (s *Server) drop(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// HTTP/2: abort the stream.
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// sleep waits d; false when the server closed meanwhile.
func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.closing:
		return false
	}
}

func (s *Server) chance(p float64) bool {
	if p <= 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.Float64() < p
}

// Keys lists the keys the server has decided, sorted (for debugging tests).
func (s *Server) Keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.decided))
	for k := range s.decided {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var _ http.Handler = (*Server)(nil)
