package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	sagav1alpha1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// These tests run the CRDs of config/crd/bases in a real API server (envtest)
// and check what admission accepts and refuses: the samples, invalid
// manifests, the immutable and mutable fields, and what kubectl shows.

var (
	ctx       context.Context
	cancel    context.CancelFunc
	testEnv   *envtest.Environment
	cfg       *rest.Config
	k8sClient client.Client
	scheme    = k8sruntime.NewScheme()
	repoRoot  = filepath.Join("..", "..")
)

func TestAPIAdmission(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "API v1alpha1 admission suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(GinkgoLogr)
	ctx, cancel = context.WithCancel(context.TODO())

	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(sagav1alpha1.AddToScheme(scheme)).To(Succeed())

	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(repoRoot, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		// Like the kubebuilder scaffold: use the binaries hack/setup-envtest.sh
		// built, when they are there, so the tests also run from an IDE.
		dir := localEnvtestBinaries()
		if dir == "" {
			Fail("KUBEBUILDER_ASSETS is not set and bin/k8s holds no envtest binaries: " +
				"run `make test`, or `export KUBEBUILDER_ASSETS=$(hack/setup-envtest.sh)` " +
				"(it builds kube-apiserver and etcd from Go modules) before `go test ./api/...`")
		}
		testEnv.BinaryAssetsDirectory = dir
	}

	var err error
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	Expect(cfg).NotTo(BeNil())

	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
})

var _ = AfterSuite(func() {
	if cancel != nil {
		cancel()
	}
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// localEnvtestBinaries returns the directory of bin/k8s that holds
// kube-apiserver and etcd for this platform, or "" when there is none.
func localEnvtestBinaries() string {
	matches, err := filepath.Glob(filepath.Join(repoRoot, "bin", "k8s", "*-"+runtime.GOOS+"-"+runtime.GOARCH))
	if err != nil {
		return ""
	}
	for _, dir := range matches {
		_, errAPI := os.Stat(filepath.Join(dir, "kube-apiserver"))
		_, errEtcd := os.Stat(filepath.Join(dir, "etcd"))
		if errAPI == nil && errEtcd == nil {
			abs, err := filepath.Abs(dir)
			if err == nil {
				return abs
			}
		}
	}
	return ""
}

// newNamespace creates a namespace with a unique name for one spec and
// returns its name. envtest has no namespace controller, so it is not
// deleted afterwards; the API server goes away with the suite.
func newNamespace(prefix string) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}
