package shop

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Fault is the fault injection of one action, or of every action of a
// service.
type Fault struct {
	// TransientRate is the fraction of calls answered 503 before anything
	// is read or applied.
	TransientRate float64 `json:"transientRate,omitempty"`
	// LatencyMs delays every call by this many milliseconds.
	LatencyMs int `json:"latencyMs,omitempty"`
	// LostReplyRate is the fraction of calls applied and committed whose
	// connection is then closed without an answer.
	LostReplyRate float64 `json:"lostReplyRate,omitempty"`
}

// MaxLatencyMs bounds Fault.LatencyMs.
const MaxLatencyMs = 60_000

func (f Fault) validate() error {
	if err := validRate(f.TransientRate); err != nil {
		return fmt.Errorf("transientRate: %w", err)
	}
	if err := validRate(f.LostReplyRate); err != nil {
		return fmt.Errorf("lostReplyRate: %w", err)
	}
	if f.LatencyMs < 0 || f.LatencyMs > MaxLatencyMs {
		return fmt.Errorf("latencyMs: %d is not within [0, %d]", f.LatencyMs, MaxLatencyMs)
	}
	return nil
}

func (f Fault) zero() bool { return f == Fault{} }

func validRate(r float64) error {
	if math.IsNaN(r) || r < 0 || r > 1 {
		return fmt.Errorf("%v is not within [0, 1]", r)
	}
	return nil
}

func normAction(a string) string {
	if a == "*" {
		return ""
	}
	return a
}

type faultInjector struct {
	mu           sync.Mutex
	rng          *rand.Rand
	byAction     map[string]Fault // "" is every action
	deliveryRate float64
}

func newFaultInjector(seed uint64, faults map[string]Fault, deliveryRate float64) *faultInjector {
	fi := &faultInjector{
		rng:          rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		byAction:     map[string]Fault{},
		deliveryRate: deliveryRate,
	}
	for a, f := range faults {
		if !f.zero() {
			fi.byAction[normAction(a)] = f
		}
	}
	return fi
}

func (fi *faultInjector) forAction(action string) Fault {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	if f, ok := fi.byAction[action]; ok {
		return f
	}
	return fi.byAction[""]
}

func (fi *faultInjector) set(action string, f Fault) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	if f.zero() {
		delete(fi.byAction, normAction(action))
		return
	}
	fi.byAction[normAction(action)] = f
}

func (fi *faultInjector) setDeliveryRate(r float64) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.deliveryRate = r
}

func (fi *faultInjector) delivery() float64 {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return fi.deliveryRate
}

// roll reports true with probability p.
func (fi *faultInjector) roll(p float64) bool {
	if p <= 0 {
		return false
	}
	if p >= 1 {
		return true
	}
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return fi.rng.Float64() < p
}

// jitter returns a duration in [d/2, d].
func (fi *faultInjector) jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return d/2 + time.Duration(fi.rng.Int64N(int64(d/2)+1))
}

// FaultsView is the body of GET /admin/faults and of the answer to
// POST /admin/faults: the faults in force by action ("*" is every action).
type FaultsView struct {
	Faults            map[string]Fault `json:"faults"`
	DeliveryFaultRate *float64         `json:"deliveryFaultRate,omitempty"`
}

// FaultRequest is the body of POST /admin/faults. It replaces the faults of
// one action ("" or "*": every action); all zero removes them.
// DeliveryFaultRate, when set, changes the notification dispatcher's.
type FaultRequest struct {
	Action            string   `json:"action"`
	TransientRate     float64  `json:"transientRate"`
	LatencyMs         int      `json:"latencyMs"`
	LostReplyRate     float64  `json:"lostReplyRate"`
	DeliveryFaultRate *float64 `json:"deliveryFaultRate,omitempty"`
}

func (s *Service) faultsView() FaultsView {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	v := FaultsView{Faults: map[string]Fault{}}
	for a, f := range s.faults.byAction {
		if a == "" {
			a = "*"
		}
		v.Faults[a] = f
	}
	if s.kind == KindNotification {
		r := s.faults.deliveryRate
		v.DeliveryFaultRate = &r
	}
	return v
}

// SetFault replaces the faults of an action ("" or "*": every action).
func (s *Service) SetFault(action string, f Fault) error {
	if a := normAction(action); a != "" {
		if _, ok := s.dom.actions()[a]; !ok {
			return fmt.Errorf("the %s service has no action %q", s.kind, action)
		}
	}
	if err := f.validate(); err != nil {
		return err
	}
	s.faults.set(action, f)
	return nil
}

// SetDeliveryFaultRate changes the notification dispatcher's delivery fault rate.
func (s *Service) SetDeliveryFaultRate(rate float64) error {
	if s.kind != KindNotification {
		return fmt.Errorf("the %s service delivers no messages", s.kind)
	}
	if err := validRate(rate); err != nil {
		return err
	}
	s.faults.setDeliveryRate(rate)
	return nil
}

// Faults returns the faults in force, by action ("*" is every action).
func (s *Service) Faults() map[string]Fault { return s.faultsView().Faults }

func (s *Service) handleGetFaults(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.faultsView())
}

func (s *Service) handleSetFaults(w http.ResponseWriter, r *http.Request) {
	var req FaultRequest
	if !decodeAdmin(w, r, &req) {
		return
	}
	f := Fault{TransientRate: req.TransientRate, LatencyMs: req.LatencyMs, LostReplyRate: req.LostReplyRate}
	if a := normAction(req.Action); a != "" {
		if _, ok := s.dom.actions()[a]; !ok {
			writeError(w, http.StatusBadRequest, CodeUnknownAction, "the %s service has no action %q (actions: %v)", s.kind, req.Action, sortedKeys(s.dom.actions()))
			return
		}
	}
	if err := f.validate(); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "%v", err)
		return
	}
	if req.DeliveryFaultRate != nil {
		if err := s.SetDeliveryFaultRate(*req.DeliveryFaultRate); err != nil {
			writeError(w, http.StatusBadRequest, CodeBadRequest, "deliveryFaultRate: %v", err)
			return
		}
	}
	s.faults.set(req.Action, f)
	s.log.Info("faults changed", "action", req.Action, "fault", f)
	writeJSON(w, http.StatusOK, s.faultsView())
}

func decodeAdmin(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "invalid body: %v", err)
		return false
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
