// Command controlplane runs a local Kubernetes control plane for the demo
// and the end-to-end tests: etcd and kube-apiserver from the envtest
// binaries (hack/setup-envtest.sh builds them from Go modules), with the
// CRDs of config/crd/bases installed. It writes an admin kubeconfig
// (system:masters), prints "control plane ready" and runs until SIGINT or
// SIGTERM (or until the process that started it goes away), then stops both
// processes and removes their temporary directories.
//
// There is no controller-manager, scheduler or kubelet: objects are stored
// and validated, namespaces cannot be deleted (nothing finalizes them), and
// Pods never run. That is all the saga operator needs.
//
//	go run ./hack/controlplane --kubeconfig bin/demo/kubeconfig --namespace shop
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		kubeconfig, crdDir, assets, namespace string
		startTimeout, stopTimeout             time.Duration
	)
	// Not flag.CommandLine: controller-runtime registers its own --kubeconfig there.
	fs := flag.NewFlagSet("controlplane", flag.ExitOnError)
	fs.StringVar(&kubeconfig, "kubeconfig", filepath.Join("bin", "demo", "kubeconfig"), "where to write the admin kubeconfig")
	fs.StringVar(&crdDir, "crd-dir", filepath.Join("config", "crd", "bases"), "directory of the CRDs to install")
	fs.StringVar(&assets, "assets", os.Getenv("KUBEBUILDER_ASSETS"),
		"directory holding kube-apiserver and etcd (default $KUBEBUILDER_ASSETS, else bin/k8s/*-"+runtime.GOOS+"-"+runtime.GOARCH+")")
	fs.StringVar(&namespace, "namespace", "", "create this namespace and make it the kubeconfig's default (default: none, kubectl uses \"default\")")
	fs.DurationVar(&startTimeout, "start-timeout", 2*time.Minute, "how long etcd and kube-apiserver each may take to become healthy")
	fs.DurationVar(&stopTimeout, "stop-timeout", 30*time.Second, "how long etcd and kube-apiserver each may take to stop")
	opts := zap.Options{Development: true}
	opts.BindFlags(fs)
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	logf.SetLogger(zap.New(zap.UseFlagOptions(&opts)))

	if assets == "" {
		assets = localAssets()
		if assets == "" {
			return errors.New("no envtest binaries: set --assets or KUBEBUILDER_ASSETS, or run hack/setup-envtest.sh " +
				"(it builds kube-apiserver and etcd from Go modules into bin/k8s)")
		}
	}
	if _, err := os.Stat(crdDir); err != nil {
		return fmt.Errorf("--crd-dir: %w", err)
	}

	// Stop on a signal, and also when the parent goes away (a test binary or
	// demo script killed with SIGKILL cannot forward a signal): etcd and
	// kube-apiserver run in their own process groups and would be left behind.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	ctx, cancelOrphan := context.WithCancel(ctx)
	defer cancelOrphan()
	go watchParent(ctx, cancelOrphan)

	env := &envtest.Environment{
		CRDDirectoryPaths:        []string{crdDir},
		ErrorIfCRDPathMissing:    true,
		BinaryAssetsDirectory:    assets,
		ControlPlaneStartTimeout: startTimeout,
		ControlPlaneStopTimeout:  stopTimeout,
	}
	fmt.Fprintf(os.Stderr, "controlplane: starting etcd and kube-apiserver from %s\n", assets)
	if _, err := env.Start(); err != nil {
		_ = env.Stop()
		return fmt.Errorf("starting the control plane: %w", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = env.Stop()
		}
	}()

	user, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("adding the admin user: %w", err)
	}
	if namespace != "" {
		cs, err := kubernetes.NewForConfig(user.Config())
		if err != nil {
			return err
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating namespace %s: %w", namespace, err)
		}
	}
	if err := writeKubeconfig(user, kubeconfig, namespace); err != nil {
		return err
	}

	fmt.Printf("control plane ready: server %s, kubeconfig %s\n", user.Config().Host, kubeconfig)
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "controlplane: stopping")
	stopped = true
	if err := env.Stop(); err != nil {
		return fmt.Errorf("stopping the control plane: %w", err)
	}
	fmt.Fprintln(os.Stderr, "controlplane: stopped")
	return nil
}

// writeKubeconfig writes the user's kubeconfig to path (mode 0600, replacing
// the file atomically), with namespace as the context's default.
func writeKubeconfig(user *envtest.AuthenticatedUser, path, namespace string) error {
	data, err := user.KubeConfig()
	if err != nil {
		return err
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return err
	}
	// envtest names the cluster, user and context "envtest".
	for _, c := range cfg.Contexts {
		c.Namespace = namespace
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := clientcmd.WriteToFile(*cfg, tmp); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// watchParent cancels when this process is re-parented, which happens when
// the process that started it exits without stopping it.
func watchParent(ctx context.Context, cancel context.CancelFunc) {
	parent := os.Getppid()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if os.Getppid() != parent {
				fmt.Fprintln(os.Stderr, "controlplane: the parent process went away")
				cancel()
				return
			}
		}
	}
}

// localAssets returns the directory of bin/k8s (relative to the working
// directory) holding kube-apiserver and etcd for this platform, or "".
func localAssets() string {
	dirs, _ := filepath.Glob(filepath.Join("bin", "k8s", "*-"+runtime.GOOS+"-"+runtime.GOARCH))
	for i := len(dirs) - 1; i >= 0; i-- {
		dir := dirs[i]
		if isExec(filepath.Join(dir, "kube-apiserver")) && isExec(filepath.Join(dir, "etcd")) {
			if abs, err := filepath.Abs(dir); err == nil {
				return abs
			}
		}
	}
	return ""
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
