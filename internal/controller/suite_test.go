package controller

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
	"github.com/sagaops/saga-operator/internal/participants"
)

// shardLabel gives each test manager its own sagas: a manager only sees
// OrderSagas carrying its shard value, so a test can stop and restart "the"
// manager without another one finishing its sagas.
const shardLabel = "test.saga.sagaops.io/shard"

var (
	cfg       *rest.Config
	k8sClient client.Client // uncached: assertions read the API server
	testEnv   *envtest.Environment
	scheme    = runtime.NewScheme()
	suiteCtx  context.Context
	cancel    context.CancelFunc
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controller Suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	suiteCtx, cancel = context.WithCancel(context.TODO())

	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(sagav1.AddToScheme(scheme))

	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		Fail("KUBEBUILDER_ASSETS is not set: run `make test`, or export KUBEBUILDER_ASSETS=$(hack/setup-envtest.sh)")
	}
	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	cfg.QPS, cfg.Burst = 500, 1000
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
})

var _ = AfterSuite(func() {
	cancel()
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// ctrlConfig lets several managers in one process register the same
// controller names.
func ctrlConfig() config.Controller {
	skip := true
	return config.Controller{SkipNameValidation: &skip}
}

// testManager is one running manager with the two reconcilers.
type testManager struct {
	shard  string
	writes *writeCounter
	saga   *OrderSagaReconciler
	stop   context.CancelFunc
	done   chan struct{}

	// check is the consistency checker; checkWrites counts its writes.
	check       *ConsistencyReconciler
	checkWrites *writeCounter
}

// startManager starts a manager that reconciles the sagas of one shard.
func startManager(shard string, tune func(*OrderSagaReconciler)) *testManager {
	GinkgoHelper()
	return startManagerWith(shard, tune, nil)
}

// startManagerWith is startManager with the consistency checker tuned too.
func startManagerWith(shard string, tune func(*OrderSagaReconciler), tuneCheck func(*ConsistencyReconciler)) *testManager {
	GinkgoHelper()
	sel := labels.SelectorFromSet(labels.Set{shardLabel: shard})
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&sagav1.OrderSaga{}:   {Label: sel},
			&sagav1.Participant{}: {Label: sel},
		}},
		Controller:             ctrlConfig(),
		HealthProbeBindAddress: "0",
	})
	Expect(err).NotTo(HaveOccurred())
	pc := participants.NewClient(participants.ClientOptions{
		MaxConnsPerHost: 64, UserAgent: "saga-operator-test", Propagator: InjectTraceContext})
	tm := &testManager{shard: shard, writes: newWriteCounter(mgr.GetClient()), done: make(chan struct{})}
	tm.saga = &OrderSagaReconciler{
		Client:       tm.writes,
		APIReader:    mgr.GetAPIReader(),
		Scheme:       scheme,
		Recorder:     mgr.GetEventRecorder("saga-operator"),
		Participants: pc,
		Metrics:      NewMetrics(),
		Jitter:       func() float64 { return 0.5 },
	}
	if tune != nil {
		tune(tm.saga)
	}
	Expect(tm.saga.SetupWithManager(mgr)).To(Succeed())
	Expect((&ParticipantReconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder("saga-operator"),
		Participants:  pc,
		Metrics:       tm.saga.Metrics,
		ProbeInterval: time.Second,
	}).SetupWithManager(mgr)).To(Succeed())
	tm.checkWrites = newWriteCounter(mgr.GetClient())
	tm.check = &ConsistencyReconciler{
		Client:                  tm.checkWrites,
		APIReader:               mgr.GetAPIReader(),
		Recorder:                mgr.GetEventRecorder("saga-operator"),
		Participants:            pc,
		Metrics:                 tm.saga.Metrics,
		Limiter:                 NewConsistencyLimiter(100, 4),
		MaxConcurrentReconciles: 4,
	}
	if tuneCheck != nil {
		tuneCheck(tm.check)
	}
	Expect(tm.check.SetupWithManager(mgr)).To(Succeed())
	ctx, stop := context.WithCancel(suiteCtx)
	tm.stop = stop
	go func() {
		defer GinkgoRecover()
		defer close(tm.done)
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	return tm
}

// newShard names a fresh shard: the sagas and Participants of one spec.
func newShard() string { return "s-" + rand.String(8) }

// runManager starts a manager for the shard and stops it when the spec ends.
func runManager(shard string, tune func(*OrderSagaReconciler)) *testManager {
	GinkgoHelper()
	tm := startManager(shard, tune)
	DeferCleanup(tm.Stop)
	return tm
}

// Stop stops the manager and waits until it has.
func (tm *testManager) Stop() {
	tm.stop()
	Eventually(tm.done).WithTimeout(30 * time.Second).Should(BeClosed())
}

// writeCounter counts the writes the operator makes, per object.
type writeCounter struct {
	client.Client
	mu     sync.Mutex
	counts map[string]int
}

func newWriteCounter(c client.Client) *writeCounter {
	return &writeCounter{Client: c, counts: map[string]int{}}
}

func (w *writeCounter) add(obj client.Object) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.counts[fmt.Sprintf("%T/%s/%s", obj, obj.GetNamespace(), obj.GetName())]++
}

// Writes returns how many writes were sent for a saga.
func (w *writeCounter) Writes(ns, name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.counts[fmt.Sprintf("%T/%s/%s", &sagav1.OrderSaga{}, ns, name)]
}

func (w *writeCounter) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	w.add(obj)
	return w.Client.Update(ctx, obj, opts...)
}

func (w *writeCounter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	w.add(obj)
	return w.Client.Patch(ctx, obj, patch, opts...)
}

func (w *writeCounter) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	w.add(obj)
	return w.Client.Delete(ctx, obj, opts...)
}

func (w *writeCounter) Status() client.SubResourceWriter {
	return &statusCounter{SubResourceWriter: w.Client.Status(), w: w}
}

type statusCounter struct {
	client.SubResourceWriter
	w *writeCounter
}

func (s *statusCounter) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	s.w.add(obj)
	return s.SubResourceWriter.Update(ctx, obj, opts...)
}

func (s *statusCounter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	s.w.add(obj)
	return s.SubResourceWriter.Patch(ctx, obj, patch, opts...)
}

// newNamespace creates a namespace with a unique name for one spec.
func newNamespace() string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "saga-test-"}}
	Expect(k8sClient.Create(suiteCtx, ns)).To(Succeed())
	return ns.Name
}
