package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// The fixed ports of make demo: the samples' participant URLs, and the
// manager's metrics and probes.
var demoPorts = []int{18081, 18082, 18083, 18084, 8080, 8081}

var _ = Describe("make demo", func() {
	It("runs the samples on its own control plane, prints the outcome and the books, and stops everything", func() {
		for _, port := range demoPorts {
			if listening(port) {
				Skip(fmt.Sprintf("port %d is in use (a make demo running?): the demo needs ports %v", port, demoPorts))
			}
		}
		demoDir := filepath.Join(artifacts, "demo")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "hack", "demo.sh"))
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "DEMO_EXIT=1", "DEMO_DIR="+demoDir, "KUBEBUILDER_ASSETS="+assetsDir)
		cmd.SysProcAttr = childAttr(syscall.SIGTERM)
		// On a timeout the script gets SIGTERM, and its trap stops what it started.
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 2 * time.Minute
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		GinkgoWriter.Printf("hack/demo.sh took %s; its output:\n%s\n", time.Since(start).Round(time.Second), out.String())
		if err != nil && strings.Contains(out.String(), "is already in use") {
			Skip("another process took one of the demo's ports while the demo was building (its output is above)")
		}
		Expect(err).NotTo(HaveOccurred(), "DEMO_EXIT=1 hack/demo.sh failed")

		text := out.String()
		for _, want := range []string{
			"control plane ready",
			"order-1001: Succeeded, as designed",
			"order-1002-out-of-stock: Compensated, as designed",
			"order-1003-payment-declined: Compensated, as designed",
			"export KUBECONFIG=" + filepath.Join(demoDir, "kubeconfig"),
			"stopped; logs are in",
		} {
			Expect(text).To(ContainSubstring(want))
		}
		// kubectl get osagas and the ledgers.
		for _, re := range []string{
			`order-1001\s+1001\s+Succeeded`,
			`order-1002-out-of-stock\s+1002\s+Compensated`,
			`order-1003-payment-declined\s+1003\s+Compensated`,
			`pay-\d+\s+CAPTURED\s+u-42\s+84\.98 USD`,
			`pay-\d+\s+REFUNDED\s+u-42\s+1000\.00 USD`,
			`SKU-1\s+98\s+2\s+100`,
			`SKU-RARE\s+10\s+0\s+10`,
			`msg-1\s+order-confirmation\s+u-42\s+delivered`,
		} {
			Expect(text).To(MatchRegexp(re))
		}
		for _, name := range []string{"controlplane", "participants", "manager"} {
			Expect(filepath.Join(demoDir, name+".log")).To(BeAnExistingFile())
		}
		cpLog, err := os.ReadFile(filepath.Join(demoDir, "controlplane.log"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(cpLog)).To(ContainSubstring("controlplane: stopped"), "the control plane stopped etcd and kube-apiserver")

		By("nothing the demo started is left listening")
		Eventually(func() []int {
			var busy []int
			for _, port := range demoPorts {
				if listening(port) {
					busy = append(busy, port)
				}
			}
			return busy
		}).WithTimeout(10 * time.Second).WithPolling(200 * time.Millisecond).Should(BeEmpty())
		Expect(strings.Count(text, "did not stop")).To(BeZero(), "every process stopped on SIGTERM")
	})
})
