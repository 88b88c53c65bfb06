package shop

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.etcd.io/bbolt"

	"github.com/sagaops/saga-operator/internal/participants"
)

// domain is the business side of one service.
type domain interface {
	// actions maps each action to its direction.
	actions() map[string]string
	// buckets names the service's own buckets.
	buckets() []string
	// setup runs once per Open, after the buckets exist.
	setup(tx *bbolt.Tx) error
	// forward applies a forward action to a step that is not applied or
	// compensated, or rejects it leaving nothing in place.
	forward(c *call) (result, error)
	// compensate undoes the effect of an applied step.
	compensate(c *call) (result, error)
	// tamper removes an applied step's effect out of band ("void", "drop")
	// and returns the step's new detail; errBadOp for an op it does not know.
	tamper(c *call, op string) (string, error)
	// ledger returns the service's books.
	ledger(tx *bbolt.Tx) (any, error)
	// describe returns the step's detail for the state query.
	describe(tx *bbolt.Tx, rec *stepRecord) string
}

// call is one action call (or tamper) inside its transaction.
type call struct {
	tx  *bbolt.Tx
	req *participants.ActionRequest // nil for a tamper
	rec *stepRecord
	now time.Time
}

func (c *call) data(v any) error {
	if len(c.rec.Data) == 0 {
		return fmt.Errorf("step %s of saga %s has no effect record", c.rec.Step, c.rec.SagaUID)
	}
	return json.Unmarshal(c.rec.Data, v)
}

var errBadOp = errors.New("unsupported op")

func newDomain(kind Kind, cfg *config) (domain, error) {
	switch kind {
	case KindOrders:
		return ordersDomain{}, nil
	case KindPayment:
		return paymentDomain{limit: cfg.paymentLimit}, nil
	case KindInventory:
		for sku, q := range cfg.stock {
			if sku == "" || q < 0 {
				return nil, fmt.Errorf("inventory: invalid stock %q=%d", sku, q)
			}
		}
		return inventoryDomain{seed: cfg.stock}, nil
	case KindNotification:
		return &notificationDomain{cfg: cfg}, nil
	}
	return nil, fmt.Errorf("unknown service kind %q", kind)
}

// Ledger returns the service's books: *OrdersLedger, *PaymentLedger,
// *InventoryLedger or *NotificationLedger, as GET /admin/ledger shows them.
func (s *Service) Ledger() (any, error) {
	var out any
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		out, err = s.dom.ledger(tx)
		return err
	})
	return out, err
}

func (s *Service) handleLedger(w http.ResponseWriter, _ *http.Request) {
	l, err := s.Ledger()
	if err != nil {
		writeError(w, http.StatusInternalServerError, CodeInternal, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

// Tamper ops.
const (
	OpVoid      = "void"
	OpDrop      = "drop"
	OpForgetKey = "forget-key"
)

// TamperRequest is the body of POST /admin/tamper.
type TamperRequest struct {
	SagaUID string `json:"sagaUid"`
	Step    string `json:"step"`
	// Op is "void" (payment), "drop" (every service) or "forget-key".
	Op string `json:"op"`
	// ForgetKey also deletes the idempotency record of the step's forward key.
	ForgetKey bool `json:"forgetKey,omitempty"`
}

// TamperResponse is the answer to POST /admin/tamper: the step afterwards.
type TamperResponse struct {
	SagaUID      string `json:"sagaUid"`
	Step         string `json:"step"`
	State        string `json:"state"`
	Detail       string `json:"detail"`
	ForgottenKey string `json:"forgottenKey,omitempty"`
}

// TamperError is a refused tamper; Status is the HTTP status the admin
// endpoint answers.
type TamperError struct {
	Status int
	Code   string
	Msg    string
}

func (e *TamperError) Error() string { return e.Msg }

// Tamper changes a step out of band (see the package doc).
func (s *Service) Tamper(req TamperRequest) (TamperResponse, error) {
	if req.SagaUID == "" || req.Step == "" || req.Op == "" {
		return TamperResponse{}, &TamperError{http.StatusBadRequest, CodeBadRequest, "sagaUid, step and op are required"}
	}
	var out TamperResponse
	now := s.cfg.now().UTC()
	err := s.db.Update(func(tx *bbolt.Tx) error {
		rec, err := getStep(tx, req.SagaUID, req.Step)
		if err != nil {
			return err
		}
		if rec == nil {
			return &TamperError{http.StatusNotFound, CodeNotFound, fmt.Sprintf("the %s service has no step %s of saga %s", s.kind, req.Step, req.SagaUID)}
		}
		forget := req.ForgetKey
		if req.Op == OpForgetKey {
			forget = true
		} else {
			if rec.State != participants.StateApplied {
				return &TamperError{http.StatusConflict, CodeNotApplied, fmt.Sprintf("step %s of saga %s is %s, not applied: nothing to %s", req.Step, req.SagaUID, rec.State, req.Op)}
			}
			detail, err := s.dom.tamper(&call{tx: tx, rec: rec, now: now}, req.Op)
			if errors.Is(err, errBadOp) {
				return &TamperError{http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("the %s service supports ops %v, not %q", s.kind, s.tamperOps(), req.Op)}
			}
			if err != nil {
				return err
			}
			rec.State, rec.Detail, rec.Data, rec.Outputs = participants.StateNone, detail, nil, nil
		}
		if forget && rec.ForwardKey != "" {
			if err := tx.Bucket(bucketKeys).Delete([]byte(rec.ForwardKey)); err != nil {
				return err
			}
			out.ForgottenKey = rec.ForwardKey
			rec.ForwardKey = ""
		}
		rec.UpdatedAt = now
		if err := putStep(tx, rec); err != nil {
			return err
		}
		out.SagaUID, out.Step, out.State, out.Detail = rec.SagaUID, rec.Step, rec.State, s.dom.describe(tx, rec)
		return nil
	})
	if err != nil {
		return TamperResponse{}, err
	}
	s.log.Warn("tampered", "sagaUid", req.SagaUID, "step", req.Step, "op", req.Op, "forgetKey", req.ForgetKey, "state", out.State)
	return out, nil
}

func (s *Service) tamperOps() []string {
	if s.kind == KindPayment {
		return []string{OpVoid, OpDrop, OpForgetKey}
	}
	return []string{OpDrop, OpForgetKey}
}

func (s *Service) handleTamper(w http.ResponseWriter, r *http.Request) {
	var req TamperRequest
	if !decodeAdmin(w, r, &req) {
		return
	}
	out, err := s.Tamper(req)
	if err != nil {
		var te *TamperError
		if errors.As(err, &te) {
			writeError(w, te.Status, te.Code, "%s", te.Msg)
			return
		}
		writeError(w, http.StatusInternalServerError, CodeInternal, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
