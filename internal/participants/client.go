package participants

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
	"github.com/sagaops/saga-operator/internal/saga"
)

// Error codes the client puts in saga.Result.Error when the failure is the
// operator's finding rather than a code sent by the participant. A status
// without a code of its own reads HTTP<status> (see HTTPCode).
const (
	// CodeTimeout: no complete answer within the call's timeout.
	CodeTimeout = "Timeout"
	// CodeConnectionError: the connection failed (refused, reset, closed
	// without an answer, TLS failure, call canceled).
	CodeConnectionError = "ConnectionError"
	// CodeInvalidResponse: a 2xx answer whose body is not a JSON object.
	CodeInvalidResponse = "InvalidResponse"
	// CodeResponseTooLarge: an answer body over MaxResponseBytes.
	CodeResponseTooLarge = "ResponseTooLarge"
	// CodeInvalidOutputs: a 200 whose outputs break the protocol's limits.
	CodeInvalidOutputs = "InvalidOutputs"
	// CodeInvalidRequest: the call could not be built (bad URL, action or
	// order); nothing was sent.
	CodeInvalidRequest = "InvalidRequest"
	// CodeAlreadyCompensated is the code a participant sends with the 409
	// that refuses a forward call after its compensation (PROTOCOL.md rule 4).
	CodeAlreadyCompensated = "already_compensated"
)

// Limits of what the client copies from an answer into a StepError.
const (
	// MaxErrorMessageBytes bounds StepError.Message.
	MaxErrorMessageBytes = 512
	// MaxErrorCodeBytes bounds StepError.Code (the API's limit).
	MaxErrorCodeBytes = 128
	// DefaultAcceptedRetryAfter is the wait after a 202 that names none.
	DefaultAcceptedRetryAfter = time.Second
	// MaxRetryAfter caps any wait a participant asks for.
	MaxRetryAfter = 24 * time.Hour
)

// Transport settings.
const (
	DefaultMaxConnsPerHost = 64
	DefaultUserAgent       = "saga-operator"
	dialTimeout            = 5 * time.Second
	tlsHandshakeTimeout    = 5 * time.Second
	idleConnTimeout        = 90 * time.Second
	// drainLimit is how much of an unread body is discarded so that the
	// connection can be reused; a longer rest closes the connection.
	drainLimit = 4 << 10
)

var (
	// ErrQueryNotSupported: the participant answered 404 to the state query;
	// consistency of its steps is Unknown, never a violation.
	ErrQueryNotSupported = errors.New("participant does not implement the state query")
	// ErrUnreachable: the participant could not be asked or gave no usable
	// answer (connection error, timeout, a status other than 200/404, or a
	// body that could not be read).
	ErrUnreachable = errors.New("participant unreachable")
	// ErrInvalidResponse: a 200 whose body is not what the protocol says
	// (not JSON, too large). Errors wrapping it also wrap ErrUnreachable.
	ErrInvalidResponse = errors.New("invalid response from participant")
)

// HTTPCode is the StepError code of an answer with this status and no code
// of its own: "HTTP503".
func HTTPCode(status int) string { return "HTTP" + strconv.Itoa(status) }

// ClientOptions configure a Client.
type ClientOptions struct {
	// MaxConnsPerHost is how many calls may be in flight to one participant
	// at once, normally the reconcile concurrency (default 64). It sizes the
	// pool of idle connections kept for reuse; it is not a hard cap (the
	// reconcile concurrency already is one).
	MaxConnsPerHost int
	// UserAgent is sent with every request (default "saga-operator").
	UserAgent string
	// Propagator, when set, is called with the call's context and the
	// request's headers just before each request is sent, to inject the W3C
	// trace context (traceparent, tracestate).
	Propagator func(ctx context.Context, h http.Header)
	// TLSConfig is the base TLS configuration for https participants (extra
	// roots, client certificates). Default: system roots, TLS 1.2 at least.
	TLSConfig *tls.Config
	// Transport replaces the tuned transport; for tests. When set,
	// MaxConnsPerHost and TLSConfig are ignored.
	Transport http.RoundTripper
}

// Client calls participants (PROTOCOL.md, caller side). It is safe for
// concurrent use; make one and share it, so that connections are reused.
type Client struct {
	hc        *http.Client
	userAgent string
	propagate func(ctx context.Context, h http.Header)
}

// NewClient returns a Client with one shared, tuned transport: keep-alives,
// an idle pool sized from MaxConnsPerHost, 5 s dial and TLS handshake
// timeouts, no response header timeout (each call's own context bounds it),
// HTTP/2 attempted over TLS, no transparent decompression, and redirects
// never followed (a POST must not turn into a GET somewhere else).
func NewClient(opts ClientOptions) *Client {
	rt := opts.Transport
	if rt == nil {
		rt = newTransport(opts)
	}
	ua := opts.UserAgent
	if ua == "" {
		ua = DefaultUserAgent
	}
	return &Client{
		hc: &http.Client{
			Transport: rt,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		userAgent: ua,
		propagate: opts.Propagator,
	}
}

func newTransport(opts ClientOptions) *http.Transport {
	n := opts.MaxConnsPerHost
	if n <= 0 {
		n = DefaultMaxConnsPerHost
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.TLSConfig != nil {
		tlsCfg = opts.TLSConfig.Clone()
		if tlsCfg.MinVersion == 0 {
			tlsCfg.MinVersion = tls.VersionTLS12
		}
	}
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   tlsHandshakeTimeout,
		MaxIdleConns:          max(100, 4*n),
		MaxIdleConnsPerHost:   n,
		IdleConnTimeout:       idleConnTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// CallRequest is one action call.
type CallRequest struct {
	SagaNamespace string
	SagaName      string
	SagaUID       string
	Step          string
	// Action is the step's action or its compensation, by Direction.
	Action    string
	Direction sagav1.Direction
	// Attempt counts from 1 for each (step, direction); informational.
	Attempt int32
	Order   sagav1.Order
	// Outputs of every step that has succeeded so far, keyed by step name.
	Outputs map[string]map[string]string
}

// NewActionRequest is the body the client sends for req: totalCents
// computed, items and outputs never null. It fails when the direction is
// not forward/compensate, a quantity or price is negative, or the total
// does not fit in 64 bits.
func NewActionRequest(req CallRequest) (ActionRequest, error) {
	dir, err := wireDirection(req.Direction)
	if err != nil {
		return ActionRequest{}, err
	}
	items := make([]Item, 0, len(req.Order.Items))
	var total uint64
	for i, it := range req.Order.Items {
		if it.Quantity < 0 || it.UnitPriceCents < 0 {
			return ActionRequest{}, fmt.Errorf("order item %d (%s): negative quantity or price", i, it.SKU)
		}
		hi, lo := bits.Mul64(uint64(it.Quantity), uint64(it.UnitPriceCents))
		if hi != 0 || lo > math.MaxInt64 || total > math.MaxInt64-lo {
			return ActionRequest{}, fmt.Errorf("order total does not fit in 64 bits")
		}
		total += lo
		items = append(items, Item{SKU: it.SKU, Quantity: int64(it.Quantity), UnitPriceCents: it.UnitPriceCents})
	}
	outputs := make(map[string]map[string]string, len(req.Outputs))
	for step, kv := range req.Outputs {
		m := make(map[string]string, len(kv))
		for k, v := range kv {
			m[k] = v
		}
		outputs[step] = m
	}
	return ActionRequest{
		SagaID:    req.SagaNamespace + "/" + req.SagaName,
		SagaUID:   req.SagaUID,
		Step:      req.Step,
		Action:    req.Action,
		Direction: dir,
		Attempt:   req.Attempt,
		Order: Order{
			OrderID:    req.Order.OrderID,
			UserID:     req.Order.UserID,
			Currency:   req.Order.Currency,
			Items:      items,
			TotalCents: int64(total),
		},
		Outputs: outputs,
	}, nil
}

func wireDirection(d sagav1.Direction) (string, error) {
	switch d {
	case sagav1.Forward:
		return DirectionForward, nil
	case sagav1.Compensate:
		return DirectionCompensate, nil
	}
	return "", fmt.Errorf("unknown direction %q", d)
}

// Call makes one action call under its own timeout (ep.Timeout) and
// classifies the answer as PROTOCOL.md's table says:
//
//   - 200 with a JSON object body: OK; a forward call's outputs are checked
//     against the limits (InvalidOutputs otherwise), a compensating call's
//     outputs are ignored.
//   - 202 with a JSON object body: Accepted; RetryAfter is the body's
//     retryAfterSeconds when positive, else the Retry-After header, else 1 s.
//   - 409, 422: Rejected, code and message from the error body (code
//     HTTP409/HTTP422 when it has none).
//   - 400, 401, 403, 404, 405, 413 and every other 4xx except 408, 425, 429:
//     Rejected, code HTTP<status>; the body's code and message, if any, go
//     in the message.
//   - 408, 425, 429, 5xx, connection errors, timeouts, a body over 64 KiB, a
//     200/202 whose body is not a JSON object (an empty body included):
//     Transient, RetryAfter from a Retry-After header (seconds or HTTP date).
//   - Statuses the protocol does not name and that could hide an effect
//     (3xx, since redirects are not followed; 2xx other than 200/202; 1xx;
//     >599): Transient with code HTTP<status>. Retrying with the same key
//     is always safe, and a forward step that never gets a definitive answer
//     ends Unknown and is compensated, whereas a rejection would claim that
//     no effect is in place.
//
// A call that cannot be built (bad URL or action, unknown direction, order
// total overflow) is Rejected with code InvalidRequest and nothing is sent.
//
// Because every call carries an Idempotency-Key, net/http may itself resend
// it once on a new connection when a kept-alive connection is closed by the
// server before any answer (a stale connection or a lost reply). The resend
// has the same key, body and attempt number, which the protocol makes
// harmless; the participant may see two requests for one Call.
func (c *Client) Call(ctx context.Context, ep Endpoint, req CallRequest) saga.Result {
	res := saga.Result{Step: req.Step, Direction: req.Direction}
	body, err := NewActionRequest(req)
	if err != nil {
		return invalidRequest(res, err)
	}
	if err := checkSegment("action", req.Action); err != nil {
		return invalidRequest(res, err)
	}
	target, err := joinURL(ep.URL, "saga", "v1", "actions", req.Action)
	if err != nil {
		return invalidRequest(res, err)
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return invalidRequest(res, err)
	}

	cctx, cancel := context.WithTimeout(ctx, ep.timeout())
	defer cancel()
	hreq, err := http.NewRequestWithContext(cctx, http.MethodPost, target, bytes.NewReader(raw))
	if err != nil {
		return invalidRequest(res, err)
	}
	h := hreq.Header
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json")
	h.Set(HeaderIdempotencyKey, IdempotencyKey(req.SagaUID, req.Step, body.Direction))
	h.Set(HeaderSagaID, body.SagaID)
	c.setCommon(cctx, h, ep)

	resp, err := c.hc.Do(hreq)
	if err != nil {
		return transportFailure(res, ctx, cctx, ep, err)
	}
	defer closeBody(resp.Body)
	data, err := readBody(resp)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			return transient(res, resp, CodeResponseTooLarge,
				fmt.Sprintf("%s: body over %d bytes", statusLine(resp.StatusCode), MaxResponseBytes))
		}
		return transportFailure(res, ctx, cctx, ep, err)
	}
	return classify(res, resp, data)
}

func (c *Client) setCommon(ctx context.Context, h http.Header, ep Endpoint) {
	h.Set("User-Agent", c.userAgent)
	if ep.BearerToken != "" {
		h.Set("Authorization", "Bearer "+ep.BearerToken)
	}
	if c.propagate != nil {
		c.propagate(ctx, h)
	}
}

func (ep Endpoint) timeout() time.Duration {
	if ep.Timeout > 0 {
		return ep.Timeout
	}
	return DefaultTimeout
}

// transient4xx are the 4xx statuses PROTOCOL.md names as transient.
var transient4xx = map[int]bool{
	http.StatusRequestTimeout:  true,
	http.StatusTooEarly:        true,
	http.StatusTooManyRequests: true,
}

func classify(res saga.Result, resp *http.Response, data []byte) saga.Result {
	status := resp.StatusCode
	switch {
	case status == http.StatusOK:
		return okAnswer(res, resp, data)
	case status == http.StatusAccepted:
		return acceptedAnswer(res, resp, data)
	case status == http.StatusConflict || status == http.StatusUnprocessableEntity:
		code, msg := errorFromBody(data)
		if code == "" {
			code = HTTPCode(status)
		}
		if msg == "" {
			msg = statusLine(status)
		}
		res.Outcome = saga.OutcomeRejected
		res.Error = stepError(code, msg, status)
		return res
	case status >= 400 && status < 500 && !transient4xx[status]:
		// 400, 401, 403, 404, 405, 413 by the protocol; every other 4xx
		// (410, 411, 415, ...) is also a request the participant refused to
		// process: permanent.
		res.Outcome = saga.OutcomeRejected
		res.Error = stepError(HTTPCode(status), describe(status, data), status)
		return res
	case status >= 200 && status < 300:
		return transient(res, resp, HTTPCode(status),
			describe(status, data)+" (the protocol answers 200 or 202)")
	case status >= 300 && status < 400:
		msg := describe(status, data) + " (redirects are not followed"
		if loc := resp.Header.Get("Location"); loc != "" {
			msg += "; Location: " + loc
		}
		return transient(res, resp, HTTPCode(status), msg+")")
	default:
		// 408, 425, 429, 5xx and anything else.
		return transient(res, resp, HTTPCode(status), describe(status, data))
	}
}

func okAnswer(res saga.Result, resp *http.Response, data []byte) saga.Result {
	var b struct {
		Outputs json.RawMessage `json:"outputs"`
	}
	if err := decodeObject(data, &b); err != nil {
		return transient(res, resp, CodeInvalidResponse, statusLine(resp.StatusCode)+": "+err.Error())
	}
	res.Outcome = saga.OutcomeOK
	if res.Direction != sagav1.Forward {
		// A compensating call's outputs are not recorded anywhere.
		return res
	}
	raw := bytes.TrimSpace(b.Outputs)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return res
	}
	var outputs map[string]string
	if err := json.Unmarshal(raw, &outputs); err != nil {
		return invalidOutputs(res, "outputs must be an object of string values")
	}
	if msg := checkOutputs(outputs); msg != "" {
		return invalidOutputs(res, msg)
	}
	if len(outputs) > 0 {
		res.Outputs = outputs
	}
	return res
}

func invalidOutputs(res saga.Result, msg string) saga.Result {
	res.Outcome = saga.OutcomeInvalidOutputs
	res.Outputs = nil
	res.Error = stepError(CodeInvalidOutputs, msg, http.StatusOK)
	return res
}

// checkOutputs returns why outputs break the limits, "" when they do not.
// Keys are checked in sorted order so the message is stable.
func checkOutputs(outputs map[string]string) string {
	if len(outputs) > MaxOutputs {
		return fmt.Sprintf("%d outputs, at most %d allowed", len(outputs), MaxOutputs)
	}
	keys := make([]string, 0, len(outputs))
	for k := range outputs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch n := utf8.RuneCountInString(k); {
		case n == 0:
			return "output with an empty key"
		case n > MaxOutputKeyLen:
			return fmt.Sprintf("output key %q is %d characters long, at most %d allowed",
				truncate(k, 80), n, MaxOutputKeyLen)
		}
		if n := len(outputs[k]); n > MaxOutputValLen {
			return fmt.Sprintf("output %q is %d bytes long, at most %d allowed", k, n, MaxOutputValLen)
		}
	}
	return ""
}

func acceptedAnswer(res saga.Result, resp *http.Response, data []byte) saga.Result {
	var b struct {
		RetryAfterSeconds *float64 `json:"retryAfterSeconds"`
	}
	if err := decodeObject(data, &b); err != nil {
		return transient(res, resp, CodeInvalidResponse, statusLine(resp.StatusCode)+": "+err.Error())
	}
	res.Outcome = saga.OutcomeAccepted
	switch {
	case b.RetryAfterSeconds != nil && *b.RetryAfterSeconds > 0:
		res.RetryAfter = secondsDuration(*b.RetryAfterSeconds)
	default:
		res.RetryAfter = retryAfterHeader(resp.Header, time.Now())
		if res.RetryAfter <= 0 {
			res.RetryAfter = DefaultAcceptedRetryAfter
		}
	}
	return res
}

func secondsDuration(s float64) time.Duration {
	if s >= MaxRetryAfter.Seconds() {
		return MaxRetryAfter
	}
	return time.Duration(math.Ceil(s * float64(time.Second)))
}

// decodeObject decodes a body that must be a JSON object.
func decodeObject(data []byte, v any) error {
	t := bytes.TrimSpace(data)
	if len(t) == 0 {
		return errors.New("empty body, expected a JSON object")
	}
	if t[0] != '{' {
		return errors.New("body is not a JSON object")
	}
	if err := json.Unmarshal(t, v); err != nil {
		return fmt.Errorf("body is not a valid JSON object: %v", err)
	}
	return nil
}

// errorFromBody reads {"error":{"code","message"}}; when the body is not
// that, the message is a cleaned excerpt of the body.
func errorFromBody(data []byte) (code, msg string) {
	var b ErrorBody
	if err := decodeObject(data, &b); err == nil {
		return clean(b.Error.Code), clean(b.Error.Message)
	}
	return "", clean(string(data))
}

// describe is "HTTP 404 Not Found" followed by what the body says.
func describe(status int, data []byte) string {
	msg := statusLine(status)
	code, text := errorFromBody(data)
	switch {
	case code != "" && text != "":
		msg += ": " + code + ": " + text
	case code != "":
		msg += ": " + code
	case text != "":
		msg += ": " + text
	}
	return msg
}

func statusLine(status int) string {
	if t := http.StatusText(status); t != "" {
		return "HTTP " + strconv.Itoa(status) + " " + t
	}
	return "HTTP " + strconv.Itoa(status)
}

func transient(res saga.Result, resp *http.Response, code, msg string) saga.Result {
	res.Outcome = saga.OutcomeTransient
	res.Outputs = nil
	status := 0
	if resp != nil {
		status = resp.StatusCode
		res.RetryAfter = retryAfterHeader(resp.Header, time.Now())
	}
	res.Error = stepError(code, msg, status)
	return res
}

func invalidRequest(res saga.Result, err error) saga.Result {
	res.Outcome = saga.OutcomeRejected
	res.Error = stepError(CodeInvalidRequest, "call not sent: "+err.Error(), 0)
	return res
}

// transportFailure classifies an error without a (complete) answer.
func transportFailure(res saga.Result, parent, cctx context.Context, ep Endpoint, err error) saga.Result {
	switch {
	case errors.Is(parent.Err(), context.Canceled):
		return transient(res, nil, CodeConnectionError, "call canceled: "+err.Error())
	case errors.Is(cctx.Err(), context.DeadlineExceeded):
		d := ep.timeout()
		if dl, ok := parent.Deadline(); ok && time.Until(dl) < 0 {
			return transient(res, nil, CodeTimeout, "no answer before the caller's deadline")
		}
		return transient(res, nil, CodeTimeout, "no answer within "+d.String())
	}
	return transient(res, nil, CodeConnectionError, err.Error())
}

// retryAfterHeader parses Retry-After: delay-seconds or an HTTP date. 0 when
// absent, unparsable or in the past.
func retryAfterHeader(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n >= int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	return min(d, MaxRetryAfter)
}

func stepError(code, msg string, status int) *sagav1.StepError {
	return &sagav1.StepError{
		Code:       truncate(code, MaxErrorCodeBytes),
		Message:    truncate(msg, MaxErrorMessageBytes),
		HTTPStatus: int32(status),
	}
}

// clean makes text from a participant fit for a status field: valid UTF-8,
// control characters as spaces, runs of white space collapsed, trimmed, and
// at most MaxErrorMessageBytes.
func clean(s string) string {
	if len(s) > 4*MaxErrorMessageBytes {
		s = s[:4*MaxErrorMessageBytes]
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return r == ' ' || r < 0x20 || r == 0x7f
	}), " ")
	return truncate(s, MaxErrorMessageBytes)
}

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

var errTooLarge = errors.New("response body too large")

// readBody reads at most MaxResponseBytes+1 bytes, never the whole of a
// larger body.
func readBody(resp *http.Response) ([]byte, error) {
	if resp.ContentLength > MaxResponseBytes {
		return nil, errTooLarge
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxResponseBytes {
		return nil, errTooLarge
	}
	return data, nil
}

// closeBody discards a bounded rest of the body, so that the connection
// can be reused, and closes it.
func closeBody(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, drainLimit)
	_ = body.Close()
}

// checkSegment accepts a value that becomes one path segment.
func checkSegment(what, s string) error {
	if s == "" || s == "." || s == ".." {
		return fmt.Errorf("invalid %s %q", what, s)
	}
	return nil
}

// joinURL appends escaped path segments to the base URL, with exactly one
// slash between the base's path (with or without a trailing slash) and them.
func joinURL(base string, segments ...string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("participant url: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("participant url %q: scheme must be http or https", base)
	}
	if u.Host == "" {
		return "", fmt.Errorf("participant url %q has no host", base)
	}
	if u.User != nil {
		return "", errors.New("participant url must not contain user info")
	}
	esc := make([]string, len(segments))
	for i, s := range segments {
		esc[i] = url.PathEscape(s)
	}
	j := u.JoinPath(esc...)
	j.Fragment, j.RawFragment = "", ""
	return j.String(), nil
}

// Health asks GET {url}/healthz; nil when the answer is 200. A call that
// gets no answer returns an error wrapping ErrUnreachable.
func (c *Client) Health(ctx context.Context, ep Endpoint) error {
	target, err := joinURL(ep.URL, strings.TrimPrefix(HealthPath, "/"))
	if err != nil {
		return err
	}
	status, _, err := c.get(ctx, ep, target)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s answered %s", HealthPath, statusLine(status))
	}
	return nil
}

// State asks GET {url}/saga/v1/sagas/{uid} and returns the participant's
// steps by name. A step it left out reads as none: that is the caller's
// business. 404 returns ErrQueryNotSupported. Any other failure returns an
// error wrapping ErrUnreachable (and ErrInvalidResponse when a 200's body is
// not a valid answer). States are returned as sent, unknown ones included.
func (c *Client) State(ctx context.Context, ep Endpoint, sagaUID string) (map[string]StepState, error) {
	if err := checkSegment("saga uid", sagaUID); err != nil {
		return nil, err
	}
	target, err := joinURL(ep.URL, "saga", "v1", "sagas", sagaUID)
	if err != nil {
		return nil, err
	}
	status, data, err := c.get(ctx, ep, target)
	if err != nil {
		return nil, err
	}
	switch status {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, ErrQueryNotSupported
	default:
		return nil, fmt.Errorf("%w: state query answered %s", ErrUnreachable, statusLine(status))
	}
	var b StateResponse
	if err := decodeObject(data, &b); err != nil {
		return nil, fmt.Errorf("%w: %w: state query: %v", ErrUnreachable, ErrInvalidResponse, err)
	}
	if b.Steps == nil {
		b.Steps = map[string]StepState{}
	}
	return b.Steps, nil
}

// get makes a GET under the endpoint's timeout and reads the body (limited).
func (c *Client) get(ctx context.Context, ep Endpoint, target string) (int, []byte, error) {
	cctx, cancel := context.WithTimeout(ctx, ep.timeout())
	defer cancel()
	hreq, err := http.NewRequestWithContext(cctx, http.MethodGet, target, nil)
	if err != nil {
		return 0, nil, err
	}
	hreq.Header.Set("Accept", "application/json")
	c.setCommon(cctx, hreq.Header, ep)
	resp, err := c.hc.Do(hreq)
	if err != nil {
		if errors.Is(cctx.Err(), context.DeadlineExceeded) {
			return 0, nil, fmt.Errorf("%w: no answer within %s", ErrUnreachable, ep.timeout())
		}
		return 0, nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	defer closeBody(resp.Body)
	data, err := readBody(resp)
	switch {
	case errors.Is(err, errTooLarge):
		return 0, nil, fmt.Errorf("%w: %w: %s: body over %d bytes", ErrUnreachable, ErrInvalidResponse, statusLine(resp.StatusCode), MaxResponseBytes)
	case err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded):
		return 0, nil, fmt.Errorf("%w: no complete answer within %s", ErrUnreachable, ep.timeout())
	case err != nil:
		return 0, nil, fmt.Errorf("%w: reading the answer: %v", ErrUnreachable, err)
	}
	return resp.StatusCode, data, nil
}
