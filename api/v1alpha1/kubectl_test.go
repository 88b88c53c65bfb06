package v1alpha1_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	sagav1alpha1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// What a user sees with the real kubectl against the real API server.
var _ = Describe("kubectl", Ordered, func() {
	var kubectl, kubeconfig string

	BeforeAll(func() {
		var err error
		kubectl, err = exec.LookPath("kubectl")
		if err != nil {
			Skip("kubectl is not on PATH: the printer-column, explain and manifest checks need the real kubectl binary")
		}
		user, err := testEnv.AddUser(envtest.User{Name: "kubectl-admin", Groups: []string{"system:masters"}}, nil)
		Expect(err).NotTo(HaveOccurred())
		data, err := user.KubeConfig()
		Expect(err).NotTo(HaveOccurred())
		kubeconfig = filepath.Join(GinkgoT().TempDir(), "kubeconfig")
		Expect(os.WriteFile(kubeconfig, data, 0o600)).To(Succeed())
	})

	// run runs kubectl and returns its standard output; it fails the spec on
	// a non-zero exit, showing standard error.
	run := func(env []string, args ...string) (string, error) {
		cmdCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(cmdCtx, kubectl, args...)
		cmd.Env = append(append(os.Environ(), "KUBECONFIG="+kubeconfig), env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil {
			GinkgoWriter.Printf("kubectl %s: %v\nstdout:\n%s\nstderr:\n%s\n", strings.Join(args, " "), err, stdout.String(), stderr.String())
			return stdout.String(), &kubectlError{err: err, stderr: stderr.String()}
		}
		return stdout.String(), nil
	}

	It("prints the printer columns of OrderSagas, filled from the status", func() {
		namespace := newNamespace("kubectl-get")
		s := &sagav1alpha1.OrderSaga{
			ObjectMeta: metav1.ObjectMeta{Name: "order-2001", Namespace: namespace},
			Spec: sagav1alpha1.OrderSagaSpec{
				Order: sagav1alpha1.Order{
					OrderID: "2001", UserID: "u-42", Currency: "USD",
					Items: []sagav1alpha1.OrderItem{{SKU: "SKU-1", Quantity: 2, UnitPriceCents: 1999}},
				},
				Steps: []sagav1alpha1.Step{
					{Name: "create-order", Participant: "orders", Action: "create", Compensation: "cancel"},
					{Name: "process-payment", Participant: "payment", Action: "charge", Compensation: "refund"},
				},
			},
		}
		Expect(k8sClient.Create(ctx, s)).To(Succeed())
		now := metav1.Now()
		s.Status = sagav1alpha1.OrderSagaStatus{
			ObservedGeneration: s.Generation,
			Phase:              sagav1alpha1.SagaRunning,
			CurrentStep:        "process-payment",
			Attempts:           3,
			StartTime:          &now,
			Steps: []sagav1alpha1.StepStatus{
				{Name: "create-order", Phase: sagav1alpha1.StepSucceeded, Attempts: 1},
				{Name: "process-payment", Phase: sagav1alpha1.StepRunning, Attempts: 3},
			},
			Conditions: []metav1.Condition{{
				Type: "Consistent", Status: metav1.ConditionTrue, Reason: "Agreed",
				Message: "every participant agrees", LastTransitionTime: now, ObservedGeneration: s.Generation,
			}},
		}
		Expect(k8sClient.Status().Update(ctx, s)).To(Succeed())

		out, err := run(nil, "get", "osagas", "--namespace", namespace)
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("kubectl get osagas:\n%s", out)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		Expect(lines).To(HaveLen(2), out)
		Expect(strings.Fields(lines[0])).To(Equal([]string{"NAME", "ORDER", "PHASE", "STEP", "ATTEMPTS", "CONSISTENT", "AGE"}), out)
		row := strings.Fields(lines[1])
		Expect(row).To(HaveLen(7), out)
		Expect(row[:6]).To(Equal([]string{"order-2001", "2001", "Running", "process-payment", "3", "True"}), out)

		// The short name and the category reach the same objects.
		out, err = run(nil, "get", "sagas", "--namespace", namespace, "--output", "name")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("ordersaga.saga.sagaops.io/order-2001"))
	})

	It("prints the printer columns of Participants", func() {
		namespace := newNamespace("kubectl-get")
		p := &sagav1alpha1.Participant{
			ObjectMeta: metav1.ObjectMeta{Name: "payment", Namespace: namespace},
			Spec:       sagav1alpha1.ParticipantSpec{URL: "http://127.0.0.1:18082"},
		}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		out, err := run(nil, "get", "sp", "--namespace", namespace)
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("kubectl get sp:\n%s", out)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		Expect(lines).To(HaveLen(2), out)
		Expect(strings.Fields(lines[0])).To(Equal([]string{"NAME", "URL", "READY", "AGE"}), out)
		Expect(strings.Fields(lines[1])[:2]).To(Equal([]string{"payment", "http://127.0.0.1:18082"}), out)
	})

	It("explains spec.steps with the field docs", func() {
		// The API server publishes a new CRD's OpenAPI a moment after it is established.
		Eventually(func(g Gomega) {
			out, err := run(nil, "explain", "ordersaga.spec.steps")
			g.Expect(err).NotTo(HaveOccurred())
			GinkgoWriter.Printf("kubectl explain ordersaga.spec.steps:\n%s", out)
			g.Expect(out).To(ContainSubstring("steps run in order, one at a time"))
			// The Step type's doc comment, and the docs of its fields.
			g.Expect(out).To(ContainSubstring("Step is one call to a participant and, optionally, the call that undoes it."))
			g.Expect(out).To(ContainSubstring("action is the forward action called on the participant."))
			g.Expect(out).To(MatchRegexp(`compensationRetry\s+<Object>`))
		}).WithTimeout(90 * time.Second).WithPolling(2 * time.Second).Should(Succeed())

		out, err := run(nil, "explain", "ordersaga.spec.steps.compensation")
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("kubectl explain ordersaga.spec.steps.compensation:\n%s", out)
		Expect(out).To(ContainSubstring("compensation is the action that undoes action"))
	})

	It("accepts the kustomize configs in a server-side dry run (hack/validate-manifests.sh)", func() {
		env := []string{"KUBECTL=" + kubectl, "CREATE_NAMESPACES=true"}
		script := filepath.Join(repoRoot, "hack", "validate-manifests.sh")
		cmdCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(cmdCtx, "bash", script)
		cmd.Env = append(append(os.Environ(), "KUBECONFIG="+kubeconfig), env...)
		out, err := cmd.CombinedOutput()
		GinkgoWriter.Printf("%s\n", out)
		Expect(err).NotTo(HaveOccurred(), "%s", out)
		Expect(string(out)).To(ContainSubstring("customresourcedefinition.apiextensions.k8s.io/ordersagas.saga.sagaops.io serverside-applied (server dry run)"))
		Expect(string(out)).To(ContainSubstring("deployment.apps/saga-operator-controller-manager serverside-applied (server dry run)"))
		Expect(string(out)).To(ContainSubstring("ordersaga.saga.sagaops.io/order-1002-out-of-stock serverside-applied (server dry run)"))
		Expect(string(out)).To(ContainSubstring("all served objects accepted"))
	})
})

type kubectlError struct {
	err    error
	stderr string
}

func (e *kubectlError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }
