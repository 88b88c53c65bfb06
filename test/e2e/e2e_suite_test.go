package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var (
	// repoRoot is the repository's top directory.
	repoRoot string
	// assetsDir holds kube-apiserver and etcd.
	assetsDir string
	// binDir holds the manager, participants and controlplane binaries.
	binDir string
	// artifacts is where the processes' logs and the specs' files go.
	artifacts     string
	keepArtifacts bool
	// kubectlPath is the real kubectl; kubeconfig the admin kubeconfig of
	// the suite's control plane.
	kubectlPath, kubeconfig string
	controlPlane            *process
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "saga-operator end-to-end suite")
}

var _ = BeforeSuite(func() {
	var err error
	kubectlPath, err = exec.LookPath("kubectl")
	if err != nil {
		Skip("kubectl is not on PATH: the end-to-end tests drive the operator with the real kubectl binary; install it to run them")
	}
	repoRoot, err = filepath.Abs(filepath.Join("..", ".."))
	Expect(err).NotTo(HaveOccurred())

	assetsDir = envtestAssets()
	if assetsDir == "" {
		Fail("KUBEBUILDER_ASSETS is not set and bin/k8s holds no envtest binaries: run `make test-e2e` " +
			"or `export KUBEBUILDER_ASSETS=$(hack/setup-envtest.sh)` (it builds kube-apiserver and etcd from Go modules)")
	}

	if artifacts = os.Getenv("E2E_ARTIFACTS"); artifacts != "" {
		keepArtifacts = true
		Expect(os.MkdirAll(artifacts, 0o755)).To(Succeed())
	} else {
		artifacts, err = os.MkdirTemp("", "saga-e2e-")
		Expect(err).NotTo(HaveOccurred())
	}
	GinkgoWriter.Printf("logs and files of this run: %s\n", artifacts)

	if binDir = os.Getenv("E2E_BIN_DIR"); binDir == "" {
		binDir = filepath.Join(artifacts, "bin")
		buildBinaries(binDir)
	}

	kubeconfig = filepath.Join(artifacts, "kubeconfig")
	controlPlane = startProcess("controlplane", syscall.SIGTERM, filepath.Join(binDir, "controlplane"),
		"--assets", assetsDir, "--kubeconfig", kubeconfig,
		"--crd-dir", filepath.Join(repoRoot, "config", "crd", "bases"))
	controlPlane.waitForLog("control plane ready", 3*time.Minute)

	out, err := kubectl("get", "crd", "-o", "name")
	Expect(err).NotTo(HaveOccurred())
	Expect(out).To(ContainSubstring("ordersagas.saga.sagaops.io"))
	Expect(out).To(ContainSubstring("participants.saga.sagaops.io"))
})

var _ = AfterSuite(func() {
	if controlPlane != nil {
		controlPlane.stop(time.Minute)
	}
})

var _ = ReportAfterSuite("artifacts", func(r Report) {
	if artifacts == "" || keepArtifacts {
		return
	}
	if r.SuiteSucceeded {
		_ = os.RemoveAll(artifacts)
		return
	}
	GinkgoWriter.Printf("the suite failed: logs kept in %s\n", artifacts)
})

// buildBinaries builds the binaries the suite runs into dir.
func buildBinaries(dir string) {
	GinkgoHelper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", dir+string(filepath.Separator),
		"./cmd/manager", "./cmd/participants", "./hack/controlplane")
	cmd.Dir = repoRoot
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	Expect(cmd.Run()).To(Succeed(), "go build of the manager, participants and controlplane binaries:\n%s", out.String())
	GinkgoWriter.Printf("built the binaries in %s\n", time.Since(start).Round(time.Second))
}

// envtestAssets returns KUBEBUILDER_ASSETS, or the directory of bin/k8s
// holding kube-apiserver and etcd for this platform, or "".
func envtestAssets() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	dirs, _ := filepath.Glob(filepath.Join(repoRoot, "bin", "k8s", "*-"+runtime.GOOS+"-"+runtime.GOARCH))
	for i := len(dirs) - 1; i >= 0; i-- {
		_, errAPI := os.Stat(filepath.Join(dirs[i], "kube-apiserver"))
		_, errEtcd := os.Stat(filepath.Join(dirs[i], "etcd"))
		if errAPI == nil && errEtcd == nil {
			return dirs[i]
		}
	}
	return ""
}

// kubectl runs the real kubectl against the suite's control plane and
// returns its standard output; the error carries standard error.
func kubectl(args ...string) (string, error) {
	return kubectlWithInput("", args...)
}

func kubectlWithInput(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubectlPath, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &commandError{args: args, err: err, stderr: stderr.String()}
	}
	return stdout.String(), nil
}

type commandError struct {
	args   []string
	err    error
	stderr string
}

func (e *commandError) Error() string {
	return "kubectl " + strings.Join(e.args, " ") + ": " + e.err.Error() + ": " + strings.TrimSpace(e.stderr)
}

// mustKubectl runs kubectl and fails the spec when it fails.
func mustKubectl(args ...string) string {
	GinkgoHelper()
	out, err := kubectl(args...)
	Expect(err).NotTo(HaveOccurred())
	return out
}
