package controller

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// Metrics are the operator's Prometheus metrics, registered on
// controller-runtime's registry so they are served on the manager's metrics
// endpoint.
type Metrics struct {
	Sagas                 *prometheus.GaugeVec
	Active                *prometheus.GaugeVec
	Completed             *prometheus.CounterVec
	SagaDuration          *prometheus.HistogramVec
	StepDuration          *prometheus.HistogramVec
	StepCalls             *prometheus.CounterVec
	CompensationFailures  *prometheus.CounterVec
	ConsistencyViolations *prometheus.CounterVec
	ConsistencyChecks     *prometheus.CounterVec
	Inconsistent          prometheus.Gauge
	ParticipantReady      *prometheus.GaugeVec

	mu           sync.Mutex
	phases       map[string]sagav1.SagaPhase
	phaseCounts  map[sagav1.SagaPhase]int
	active       map[string]int // by namespace
	inconsistent map[string]bool
}

var (
	defaultMetrics     *Metrics
	defaultMetricsOnce sync.Once
)

// DefaultMetrics returns the metrics registered once on controller-runtime's registry.
func DefaultMetrics() *Metrics {
	defaultMetricsOnce.Do(func() {
		defaultMetrics = NewMetrics()
		defaultMetrics.MustRegister(metrics.Registry)
	})
	return defaultMetrics
}

// NewMetrics creates unregistered metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		Sagas: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "saga_sagas",
			Help: "Sagas known to this operator, by phase.",
		}, []string{"phase"}),
		Active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "saga_active",
			Help: "Sagas that are Pending, Running or Compensating, by namespace.",
		}, []string{"namespace"}),
		Completed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "saga_completed_total",
			Help: "Sagas that reached a terminal phase, by namespace and phase.",
		}, []string{"namespace", "phase"}),
		SagaDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "saga_duration_seconds",
			Help:    "Time from a saga's first call to its end, by final phase.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 16),
		}, []string{"phase"}),
		StepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "saga_step_duration_seconds",
			Help:    "Duration of participant calls, by participant, action, direction and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"participant", "action", "direction", "outcome"}),
		StepCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "saga_step_attempts_total",
			Help: "Participant calls (attempts), by participant, action, direction and outcome.",
		}, []string{"participant", "action", "direction", "outcome"}),
		CompensationFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "saga_compensation_failures_total",
			Help: "Compensations refused or exhausted (sagas sent to the dead letter), by namespace, participant and step.",
		}, []string{"namespace", "participant", "step"}),
		ConsistencyViolations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "saga_consistency_violations_total",
			Help: "New consistency violations found after sagas ended, by namespace, participant, step and kind.",
		}, []string{"namespace", "participant", "step", "kind"}),
		ConsistencyChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "saga_consistency_checks_total",
			Help: "Consistency checks of ended sagas, by result reason.",
		}, []string{"reason"}),
		Inconsistent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "saga_inconsistent",
			Help: "Ended sagas whose participants currently disagree with the outcome.",
		}),
		ParticipantReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "saga_participant_ready",
			Help: "1 when the Participant's /healthz answered 200 at the last probe, else 0.",
		}, []string{"namespace", "participant"}),
		phases:       map[string]sagav1.SagaPhase{},
		phaseCounts:  map[sagav1.SagaPhase]int{},
		active:       map[string]int{},
		inconsistent: map[string]bool{},
	}
}

// MustRegister registers every metric on reg.
func (m *Metrics) MustRegister(reg prometheus.Registerer) {
	reg.MustRegister(m.Sagas, m.Active, m.SagaDuration, m.StepDuration, m.StepCalls,
		m.CompensationFailures, m.ConsistencyViolations, m.ConsistencyChecks, m.Inconsistent, m.Completed, m.ParticipantReady)
}

// ObservePhase records the phase of one saga (key "namespace/name"); ""
// forgets it (deleted).
func (m *Metrics) ObservePhase(key string, phase sagav1.SagaPhase) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.phases[key]
	if old == phase {
		return
	}
	if phase == "" {
		delete(m.phases, key)
	} else {
		m.phases[key] = phase
	}
	ns, _, _ := strings.Cut(key, "/")
	for p, delta := range map[sagav1.SagaPhase]int{old: -1, phase: +1} {
		if p == "" {
			continue
		}
		m.phaseCounts[p] += delta
		m.Sagas.WithLabelValues(string(p)).Set(float64(m.phaseCounts[p]))
		if !p.Terminal() {
			m.active[ns] += delta
			m.Active.WithLabelValues(ns).Set(float64(m.active[ns]))
		}
	}
}

// ObserveInconsistent records whether one saga is currently inconsistent.
func (m *Metrics) ObserveInconsistent(key string, inconsistent bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inconsistent[key] == inconsistent {
		return
	}
	if inconsistent {
		m.inconsistent[key] = true
	} else {
		delete(m.inconsistent, key)
	}
	m.Inconsistent.Set(float64(len(m.inconsistent)))
}
