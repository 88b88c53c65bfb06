package shop

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/sagaops/saga-operator/internal/participants"
)

// Kind names one of the reference services.
type Kind string

// The reference services.
const (
	KindOrders       Kind = "orders"
	KindPayment      Kind = "payment"
	KindInventory    Kind = "inventory"
	KindNotification Kind = "notification"
)

// Kinds returns every reference service, in the order a shop saga calls them.
func Kinds() []Kind {
	return []Kind{KindOrders, KindPayment, KindInventory, KindNotification}
}

// Error codes in {"error": {"code": ...}} answers.
const (
	// Rejections (409/422), stored under the key.
	CodeAlreadyCompensated = "already_compensated"
	CodeCardDeclined       = "card_declined"
	CodeInsufficientStock  = "insufficient_stock"
	CodeOrderExists        = "order_exists"
	CodeOrderNotFound      = "order_not_found"
	CodeOrderNotPending    = "order_not_pending"
	CodeInvalidOrder       = "invalid_order"

	// Protocol errors, never stored.
	CodeBadRequest        = "bad_request"
	CodeMissingKey        = "missing_idempotency_key"
	CodeDirectionMismatch = "direction_mismatch"
	CodeStepConflict      = "step_conflict"
	CodeUnknownAction     = "unknown_action"
	CodeRequestTooLarge   = "request_too_large"
	CodeUnauthorized      = "unauthorized"
	CodeUnavailable       = "unavailable"
	CodeInternal          = "internal"

	// Admin endpoints.
	CodeNotFound   = "not_found"
	CodeNotApplied = "not_applied"
)

// HeaderReplayed is set to "true" on an answer replayed from the key record.
const HeaderReplayed = "Idempotent-Replayed"

const (
	maxRequestBytes = 1 << 20
	maxKeyLen       = 512
)

// Bucket names shared by every service.
var (
	bucketKeys  = []byte("keys")
	bucketSteps = []byte("steps")
)

type config struct {
	noSync            bool
	seed              uint64
	faults            map[string]Fault
	logger            *slog.Logger
	now               func() time.Time
	authToken         string
	openTimeout       time.Duration
	paymentLimit      int64
	stock             map[string]int64
	webhookURL        string
	httpClient        *http.Client
	deliveryFaultRate float64
	pollInterval      time.Duration
	backoffInitial    time.Duration
	backoffMax        time.Duration
}

// Option configures a Service.
type Option func(*config)

// WithNoSync turns off the fsync at commit (bbolt NoSync). For tests only:
// without it a 200 is no longer durable.
func WithNoSync(noSync bool) Option { return func(c *config) { c.noSync = noSync } }

// WithSeed seeds the random source of fault injection and backoff jitter.
func WithSeed(seed uint64) Option { return func(c *config) { c.seed = seed } }

// WithFault injects faults into an action; action "" or "*" means every
// action of the service (an action's own entry takes precedence).
func WithFault(action string, f Fault) Option {
	return func(c *config) {
		if c.faults == nil {
			c.faults = map[string]Fault{}
		}
		c.faults[normAction(action)] = f
	}
}

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithClock sets the clock (default time.Now).
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithBearerToken makes the protocol endpoints require
// "Authorization: Bearer <token>"; an empty token disables the check.
func WithBearerToken(token string) Option { return func(c *config) { c.authToken = token } }

// WithOpenTimeout bounds the wait for the database file lock (default 1s):
// a second process on the same file fails instead of hanging.
func WithOpenTimeout(d time.Duration) Option { return func(c *config) { c.openTimeout = d } }

// WithPaymentLimit sets the payment service's limit on a user's outstanding
// charges, in cents per currency; 0 or less means no limit. Default
// DefaultPaymentLimitCents.
func WithPaymentLimit(cents int64) Option { return func(c *config) { c.paymentLimit = cents } }

// WithStock seeds the inventory service's stock, SKU to quantity. SKUs
// already in the database keep their stored levels.
func WithStock(stock map[string]int64) Option {
	return func(c *config) {
		if c.stock == nil {
			c.stock = map[string]int64{}
		}
		for k, v := range stock {
			c.stock[k] = v
		}
	}
}

// WithWebhook makes the notification dispatcher POST every message to url
// before recording it delivered; client nil means a client with a 5s timeout.
func WithWebhook(url string, client *http.Client) Option {
	return func(c *config) { c.webhookURL, c.httpClient = url, client }
}

// WithDeliveryFaultRate makes that fraction of the notification
// dispatcher's deliveries fail (and be retried).
func WithDeliveryFaultRate(rate float64) Option {
	return func(c *config) { c.deliveryFaultRate = rate }
}

// WithDispatchTiming sets the notification dispatcher's poll interval and
// its retry backoff (initial, doubled per attempt, capped at max, with
// jitter). Zero values keep the defaults: 1s, 100ms, 10s.
func WithDispatchTiming(poll, initial, max time.Duration) Option {
	return func(c *config) {
		if poll > 0 {
			c.pollInterval = poll
		}
		if initial > 0 {
			c.backoffInitial = initial
		}
		if max > 0 {
			c.backoffMax = max
		}
	}
}

// DefaultPaymentLimitCents is the default limit on a user's outstanding charges.
const DefaultPaymentLimitCents = 1_000_000

// Service is one reference participant: an http.Handler over its own bbolt
// database. It is safe for concurrent use.
type Service struct {
	kind   Kind
	path   string
	db     *bbolt.DB
	dom    domain
	cfg    config
	log    *slog.Logger
	mux    *http.ServeMux
	faults *faultInjector
	disp   *dispatcher // notification only

	closeOnce sync.Once
	closeErr  error
}

// NewOrders opens the orders service over the database file at path.
func NewOrders(path string, opts ...Option) (*Service, error) {
	return Open(KindOrders, path, opts...)
}

// NewPayment opens the payment service over the database file at path.
func NewPayment(path string, opts ...Option) (*Service, error) {
	return Open(KindPayment, path, opts...)
}

// NewInventory opens the inventory service over the database file at path.
func NewInventory(path string, opts ...Option) (*Service, error) {
	return Open(KindInventory, path, opts...)
}

// NewNotification opens the notification service over the database file at
// path. Its dispatcher runs between Start and Stop.
func NewNotification(path string, opts ...Option) (*Service, error) {
	return Open(KindNotification, path, opts...)
}

// Open opens the service of the given kind over the database file at path,
// creating the file (and its directory) when missing.
func Open(kind Kind, path string, opts ...Option) (*Service, error) {
	cfg := config{
		seed:           1,
		now:            time.Now,
		openTimeout:    time.Second,
		paymentLimit:   DefaultPaymentLimitCents,
		pollInterval:   time.Second,
		backoffInitial: 100 * time.Millisecond,
		backoffMax:     10 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	if cfg.httpClient == nil {
		cfg.httpClient = &http.Client{Timeout: 5 * time.Second}
	}
	dom, err := newDomain(kind, &cfg)
	if err != nil {
		return nil, err
	}
	for action, f := range cfg.faults {
		if action != "" {
			if _, ok := dom.actions()[action]; !ok {
				return nil, fmt.Errorf("%s: fault for unknown action %q", kind, action)
			}
		}
		if err := f.validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", kind, err)
		}
	}
	if err := validRate(cfg.deliveryFaultRate); err != nil {
		return nil, fmt.Errorf("%s: deliveryFaultRate: %w", kind, err)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: cfg.openTimeout, NoSync: cfg.noSync})
	if err != nil {
		return nil, fmt.Errorf("%s: open %s: %w", kind, path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range append([]string{string(bucketKeys), string(bucketSteps)}, dom.buckets()...) {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		return dom.setup(tx)
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%s: initialise %s: %w", kind, path, err)
	}
	s := &Service{
		kind:   kind,
		path:   path,
		db:     db,
		dom:    dom,
		cfg:    cfg,
		log:    cfg.logger.With("service", string(kind)),
		faults: newFaultInjector(cfg.seed, cfg.faults, cfg.deliveryFaultRate),
	}
	if kind == KindNotification {
		s.disp = newDispatcher(s)
	}
	s.routes()
	return s, nil
}

// Kind returns the service's kind.
func (s *Service) Kind() Kind { return s.kind }

// Path returns the service's database file.
func (s *Service) Path() string { return s.path }

// Actions returns the service's actions and the direction of each.
func (s *Service) Actions() map[string]string {
	out := map[string]string{}
	for a, d := range s.dom.actions() {
		out[a] = d
	}
	return out
}

// Start starts the service's background work under ctx: the outbox
// dispatcher of the notification service; nothing for the others.
func (s *Service) Start(ctx context.Context) error {
	if s.disp == nil {
		return nil
	}
	return s.disp.start(ctx)
}

// Stop stops the background work started by Start and waits for it.
func (s *Service) Stop() {
	if s.disp != nil {
		s.disp.stop()
	}
}

// Close stops the background work and closes the database. Requests
// arriving afterwards fail with 500 (and /healthz with 503).
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		s.Stop()
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// ServeHTTP implements http.Handler.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Service) routes() {
	m := http.NewServeMux()
	m.HandleFunc("POST "+participants.ActionPathPrefix+"{action}", s.handleAction)
	m.HandleFunc("GET "+participants.StatePathPrefix+"{uid}", s.handleState)
	m.HandleFunc("GET "+participants.HealthPath, s.handleHealth)
	m.HandleFunc("GET /admin/ledger", s.handleLedger)
	m.HandleFunc("GET /admin/faults", s.handleGetFaults)
	m.HandleFunc("POST /admin/faults", s.handleSetFaults)
	m.HandleFunc("POST /admin/tamper", s.handleTamper)
	s.mux = m
}

// stepRecord is the state of one (sagaUid, step) at this service.
type stepRecord struct {
	SagaUID          string            `json:"sagaUid"`
	SagaID           string            `json:"sagaId,omitempty"`
	Step             string            `json:"step"`
	State            string            `json:"state"`
	Detail           string            `json:"detail,omitempty"`
	ForwardAction    string            `json:"forwardAction,omitempty"`
	ForwardKey       string            `json:"forwardKey,omitempty"`
	CompensateAction string            `json:"compensateAction,omitempty"`
	CompensateKey    string            `json:"compensateKey,omitempty"`
	Outputs          map[string]string `json:"outputs,omitempty"`
	Data             json.RawMessage   `json:"data,omitempty"`
	UpdatedAt        time.Time         `json:"updatedAt"`
}

// keyRecord is the first answer given to an Idempotency-Key.
type keyRecord struct {
	Status    int       `json:"status"`
	Body      []byte    `json:"body"`
	SagaUID   string    `json:"sagaUid"`
	Step      string    `json:"step"`
	Direction string    `json:"direction"`
	Action    string    `json:"action"`
	StoredAt  time.Time `json:"storedAt"`
}

func stepKey(uid, step string) []byte { return []byte(uid + "\x00" + step) }

func getStep(tx *bbolt.Tx, uid, step string) (*stepRecord, error) {
	var rec stepRecord
	found, err := getJSON(tx.Bucket(bucketSteps), stepKey(uid, step), &rec)
	if err != nil || !found {
		return nil, err
	}
	return &rec, nil
}

func putStep(tx *bbolt.Tx, rec *stepRecord) error {
	return putJSON(tx.Bucket(bucketSteps), stepKey(rec.SagaUID, rec.Step), rec)
}

// result is what a business rule decided.
type result struct {
	status  int // 200, 409 or 422
	outputs map[string]string
	code    string
	message string
	detail  string // the step's detail after the call
	data    any    // the effect's reference, kept in the step record (200 only)
}

func okResult(outputs map[string]string, detail string, data any) result {
	return result{status: http.StatusOK, outputs: outputs, detail: detail, data: data}
}

func rejectResult(status int, code, format string, args ...any) result {
	return result{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// answer is what is sent back.
type answer struct {
	status   int
	body     []byte
	replayed bool
	stored   bool
}

func (r result) body() []byte {
	var v any
	if r.status == http.StatusOK {
		v = participants.ActionResponse{Outputs: r.outputs}
	} else {
		v = participants.ErrorBody{Error: participants.ErrorDetail{Code: r.code, Message: r.message}}
	}
	b, _ := json.Marshal(v)
	return b
}

func errorBody(code, format string, args ...any) []byte {
	b, _ := json.Marshal(participants.ErrorBody{Error: participants.ErrorDetail{Code: code, Message: fmt.Sprintf(format, args...)}})
	return b
}

func (s *Service) handleAction(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	if !s.authorized(r) {
		writeError(w, http.StatusUnauthorized, CodeUnauthorized, "missing or wrong bearer token")
		return
	}
	dir, known := s.dom.actions()[action]
	if !known {
		writeError(w, http.StatusNotFound, CodeUnknownAction, "the %s service has no action %q", s.kind, action)
		return
	}
	f := s.faults.forAction(action)
	if f.LatencyMs > 0 {
		t := time.NewTimer(time.Duration(f.LatencyMs) * time.Millisecond)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if s.faults.roll(f.TransientRate) {
		s.log.Info("injected transient fault", "action", action)
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "injected transient fault: nothing was applied, retry with the same key")
		return
	}
	key := r.Header.Get(participants.HeaderIdempotencyKey)
	if key == "" {
		writeError(w, http.StatusBadRequest, CodeMissingKey, "the %s header is required", participants.HeaderIdempotencyKey)
		return
	}
	if len(key) > maxKeyLen {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "the %s header is longer than %d bytes", participants.HeaderIdempotencyKey, maxKeyLen)
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, CodeRequestTooLarge, "the request body is over %d bytes", maxRequestBytes)
			return
		}
		writeError(w, http.StatusBadRequest, CodeBadRequest, "reading the body: %v", err)
		return
	}
	var req participants.ActionRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "the body is not a valid action request: %v", err)
		return
	}
	switch {
	case req.SagaUID == "":
		writeError(w, http.StatusBadRequest, CodeBadRequest, "sagaUid is required")
		return
	case req.Step == "":
		writeError(w, http.StatusBadRequest, CodeBadRequest, "step is required")
		return
	case req.Direction != participants.DirectionForward && req.Direction != participants.DirectionCompensate:
		writeError(w, http.StatusBadRequest, CodeBadRequest, "direction must be %q or %q, not %q",
			participants.DirectionForward, participants.DirectionCompensate, req.Direction)
		return
	case req.Action != "" && req.Action != action:
		writeError(w, http.StatusBadRequest, CodeBadRequest, "the body names action %q but the path %q", req.Action, action)
		return
	case req.Direction != dir:
		writeError(w, http.StatusBadRequest, CodeDirectionMismatch, "%s is a %s action, called with direction %s", action, dir, req.Direction)
		return
	}
	req.Action = action

	ans, err := s.apply(key, &req)
	if err != nil {
		s.log.Error("action failed", "action", action, "key", key, "err", err)
		writeError(w, http.StatusInternalServerError, CodeInternal, "%v", err)
		return
	}
	s.log.Info("action", "action", action, "sagaUid", req.SagaUID, "step", req.Step,
		"status", ans.status, "replayed", ans.replayed)
	if s.faults.roll(f.LostReplyRate) {
		s.log.Info("injected lost reply", "action", action, "key", key, "status", ans.status)
		dropConnection(w)
		return
	}
	if ans.replayed {
		w.Header().Set(HeaderReplayed, "true")
	}
	writeRaw(w, ans.status, ans.body)
}

// apply decides the call in one transaction (see the package doc).
func (s *Service) apply(key string, req *participants.ActionRequest) (answer, error) {
	var ans answer
	now := s.cfg.now().UTC()
	err := s.db.Update(func(tx *bbolt.Tx) error {
		ans = answer{}
		keys := tx.Bucket(bucketKeys)
		var kr keyRecord
		found, err := getJSON(keys, []byte(key), &kr)
		if err != nil {
			return err
		}
		if found {
			ans = answer{status: kr.Status, body: kr.Body, replayed: true}
			return nil
		}
		rec, err := getStep(tx, req.SagaUID, req.Step)
		if err != nil {
			return err
		}
		if rec == nil {
			rec = &stepRecord{SagaUID: req.SagaUID, Step: req.Step, State: participants.StateNone}
		}
		if req.SagaID != "" {
			rec.SagaID = req.SagaID
		}
		c := &call{tx: tx, req: req, rec: rec, now: now}
		var res result
		if req.Direction == participants.DirectionForward {
			switch rec.State {
			case participants.StateCompensated:
				res = rejectResult(http.StatusConflict, CodeAlreadyCompensated,
					"step %s of saga %s was already compensated; its forward effect is not applied", req.Step, req.SagaUID)
			case participants.StateApplied:
				if rec.ForwardAction != req.Action {
					ans = answer{status: http.StatusBadRequest, body: errorBody(CodeStepConflict,
						"step %s of saga %s was applied by action %s, not %s", req.Step, req.SagaUID, rec.ForwardAction, req.Action)}
					return nil
				}
				// Applied under another key: same answer, no second effect.
				res = okResult(rec.Outputs, rec.Detail, nil)
			default:
				if res, err = s.dom.forward(c); err != nil {
					return err
				}
				rec.ForwardAction, rec.ForwardKey = req.Action, key
				if res.status == http.StatusOK {
					if err := setData(rec, res.data); err != nil {
						return err
					}
					rec.State, rec.Detail, rec.Outputs = participants.StateApplied, res.detail, res.outputs
				} else {
					rec.State, rec.Data, rec.Outputs = participants.StateNone, nil, nil
					rec.Detail = fmt.Sprintf("rejected %s (%d %s): %s", req.Action, res.status, res.code, res.message)
				}
			}
		} else {
			switch rec.State {
			case participants.StateApplied:
				if res, err = s.dom.compensate(c); err != nil {
					return err
				}
				if res.status == http.StatusOK {
					if res.data != nil {
						if err := setData(rec, res.data); err != nil {
							return err
						}
					}
					rec.State, rec.Detail = participants.StateCompensated, res.detail
				}
			case participants.StateCompensated:
				res = okResult(nil, rec.Detail, nil)
			default:
				res = okResult(nil, "", nil)
				rec.State = participants.StateCompensated
				rec.Detail = fmt.Sprintf("compensated (%s) before any forward effect: nothing to undo", req.Action)
			}
			rec.CompensateAction, rec.CompensateKey = req.Action, key
		}
		rec.UpdatedAt = now
		if err := putStep(tx, rec); err != nil {
			return err
		}
		ans = answer{status: res.status, body: res.body(), stored: true}
		return putJSON(keys, []byte(key), keyRecord{
			Status: ans.status, Body: ans.body, SagaUID: req.SagaUID, Step: req.Step,
			Direction: req.Direction, Action: req.Action, StoredAt: now,
		})
	})
	if err != nil {
		return answer{}, err
	}
	if ans.stored && s.disp != nil {
		s.disp.notify()
	}
	return ans, nil
}

func setData(rec *stepRecord, data any) error {
	if data == nil {
		rec.Data = nil
		return nil
	}
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	rec.Data = b
	return nil
}

func (s *Service) handleState(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		writeError(w, http.StatusUnauthorized, CodeUnauthorized, "missing or wrong bearer token")
		return
	}
	uid := r.PathValue("uid")
	resp := participants.StateResponse{Steps: map[string]participants.StepState{}}
	err := s.db.View(func(tx *bbolt.Tx) error {
		prefix := []byte(uid + "\x00")
		c := tx.Bucket(bucketSteps).Cursor()
		for k, v := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, v = c.Next() {
			var rec stepRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			resp.Steps[rec.Step] = participants.StepState{State: rec.State, Detail: s.dom.describe(tx, &rec)}
		}
		return nil
	})
	if err != nil {
		writeError(w, http.StatusInternalServerError, CodeInternal, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Service) handleHealth(w http.ResponseWriter, _ *http.Request) {
	if err := s.db.View(func(*bbolt.Tx) error { return nil }); err != nil {
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "service": string(s.kind)})
}

func (s *Service) authorized(r *http.Request) bool {
	if s.cfg.authToken == "" {
		return true
	}
	want := "Bearer " + s.cfg.authToken
	got := r.Header.Get("Authorization")
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// dropConnection closes the client connection without an answer, as a
// crash after the commit would.
func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	// Not hijackable (HTTP/2): abort the response.
	panic(http.ErrAbortHandler)
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, CodeInternal, "%v", err)
		return
	}
	writeRaw(w, status, b)
}

func writeError(w http.ResponseWriter, status int, code, format string, args ...any) {
	writeRaw(w, status, errorBody(code, format, args...))
}

func hasPrefix(b, prefix []byte) bool {
	return len(b) >= len(prefix) && string(b[:len(prefix)]) == string(prefix)
}

// eachJSON calls fn with every key of b and its value decoded from JSON.
func eachJSON[T any](b *bbolt.Bucket, fn func(k []byte, v T) error) error {
	return b.ForEach(func(k, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		return fn(k, v)
	})
}

func getJSON(b *bbolt.Bucket, k []byte, v any) (bool, error) {
	raw := b.Get(k)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("decode %s/%q: %w", b.Tx().DB().Path(), k, err)
	}
	return true, nil
}

func putJSON(b *bbolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, raw)
}

func seqKey(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}
