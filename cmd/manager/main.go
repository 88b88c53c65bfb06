// Command manager runs the saga operator: the OrderSaga and Participant
// controllers under one controller-runtime manager.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
	"github.com/sagaops/saga-operator/internal/controller"
	"github.com/sagaops/saga-operator/internal/participants"
)

var (
	scheme   = runtime.NewScheme()
	setupLog = ctrl.Log.WithName("setup")
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(sagav1.AddToScheme(scheme))
}

func main() {
	var (
		metricsAddr, probeAddr        string
		secureMetrics, enableHTTP2    bool
		enableLeaderElection          bool
		qps                           float64
		burst, workers, callsPerRecon int
		probeInterval                 time.Duration
		otlpEndpoint                  string
		otlpInsecure                  bool
		checkQPS                      float64
		checkWorkers                  int
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "The address the metrics endpoint binds to. "+
		"Use :8443 for HTTPS or :8080 for HTTP; 0 disables it.")
	flag.BoolVar(&secureMetrics, "metrics-secure", true, "Serve metrics over HTTPS with authentication and authorization.")
	flag.BoolVar(&enableHTTP2, "enable-http2", false, "Enable HTTP/2 for the metrics server (off: HTTP/2 rapid reset CVEs).")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "The address the probe endpoint binds to.")
	flag.BoolVar(&enableLeaderElection, "leader-elect", false, "Enable leader election, so one manager is active at a time.")
	// controller-runtime has no client-side rate limit by default since
	// v0.21. A saga costs about one write per step, so 200 QPS carries tens
	// of sagas per second while keeping a runaway operator from flooding the
	// API server.
	flag.Float64Var(&qps, "kube-api-qps", 200, "Client-side queries per second to the Kubernetes API.")
	flag.IntVar(&burst, "kube-api-burst", 300, "Client-side burst of queries to the Kubernetes API.")
	// A reconcile holds its worker for the duration of a participant call, so
	// slow participants must not starve the queue.
	flag.IntVar(&workers, "max-concurrent-reconciles", 64, "OrderSagas reconciled in parallel (and participant connections kept per host).")
	flag.IntVar(&callsPerRecon, "max-calls-per-reconcile", 16, "Participant calls made in one reconcile, each persisted before the next.")
	flag.DurationVar(&probeInterval, "participant-probe-interval", 30*time.Second, "Time between health probes of each Participant.")
	flag.StringVar(&otlpEndpoint, "otlp-endpoint", "", "OTLP/gRPC endpoint (host:port) to export traces to; "+
		"empty with OTEL_EXPORTER_OTLP_ENDPOINT unset turns tracing off. On, participants receive a W3C traceparent.")
	flag.BoolVar(&otlpInsecure, "otlp-insecure", false, "Export traces without TLS.")
	flag.Float64Var(&checkQPS, "consistency-qps", 20, "State queries and repair calls per second the consistency checker sends to participants, "+
		"all sagas together (burst: the worker count); 0 means no limit.")
	flag.IntVar(&checkWorkers, "consistency-workers", 4, "Ended sagas checked for consistency in parallel.")
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))

	var tlsOpts []func(*tls.Config)
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{BindAddress: metricsAddr, SecureServing: secureMetrics, TLSOpts: tlsOpts}
	if secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(qps), burst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsOpts,
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         enableLeaderElection,
		LeaderElectionID:       "saga-operator.saga.sagaops.io",
	})
	if err != nil {
		setupLog.Error(err, "unable to create manager")
		os.Exit(1)
	}

	ctx := ctrl.SetupSignalHandler()
	shutdownTracing, err := setupTracing(ctx, otlpEndpoint, otlpInsecure)
	if err != nil {
		setupLog.Error(err, "unable to set up tracing")
		os.Exit(1)
	}
	defer func() { _ = shutdownTracing(context.Background()) }()

	client := participants.NewClient(participants.ClientOptions{
		MaxConnsPerHost: workers,
		UserAgent:       "saga-operator",
		Propagator:      controller.InjectTraceContext,
	})
	if err := (&controller.OrderSagaReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Scheme:                  mgr.GetScheme(),
		Recorder:                mgr.GetEventRecorder("saga-operator"),
		Participants:            client,
		MaxConcurrentReconciles: workers,
		MaxCallsPerReconcile:    callsPerRecon,
	}).SetupWithManager(mgr); err != nil {
		setupLog.Error(err, "unable to create controller", "controller", "OrderSaga")
		os.Exit(1)
	}
	if err := (&controller.ParticipantReconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder("saga-operator"),
		Participants:  client,
		ProbeInterval: probeInterval,
	}).SetupWithManager(mgr); err != nil {
		setupLog.Error(err, "unable to create controller", "controller", "Participant")
		os.Exit(1)
	}
	if err := (&controller.ConsistencyReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Recorder:                mgr.GetEventRecorder("saga-operator"),
		Participants:            client,
		Limiter:                 controller.NewConsistencyLimiter(checkQPS, checkWorkers),
		MaxConcurrentReconciles: checkWorkers,
	}).SetupWithManager(mgr); err != nil {
		setupLog.Error(err, "unable to create controller", "controller", "consistency")
		os.Exit(1)
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "unable to set up health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		setupLog.Error(err, "unable to set up ready check")
		os.Exit(1)
	}

	setupLog.Info("starting manager", "maxConcurrentReconciles", workers, "qps", qps, "burst", burst)
	if err := mgr.Start(ctx); err != nil {
		setupLog.Error(err, "problem running manager")
		_ = shutdownTracing(context.Background())
		os.Exit(1)
	}
}
