// Package e2e holds the end-to-end tests of the saga operator. They run real
// processes only: the local control plane (hack/controlplane: etcd and
// kube-apiserver from the envtest binaries), the manager binary
// (cmd/manager), the reference shop services (cmd/participants) and the real
// kubectl, and check what a user sees with kubectl and what the services'
// books say: every saga ends as designed, stock and money are conserved, and
// nothing is applied twice, also when the manager is killed with SIGKILL in
// the middle of 200 sagas.
//
//	make test-e2e                      # or: go test ./test/e2e/ -v -ginkgo.v
//
// KUBEBUILDER_ASSETS names the envtest binaries (make sets it; without it
// the suite uses bin/k8s). E2E_BIN_DIR, when set, holds prebuilt manager,
// participants and controlplane binaries; otherwise the suite builds them.
// E2E_ARTIFACTS, when set, is where the processes' logs go (and stay);
// otherwise a temporary directory, kept when a spec fails. The specs need
// kubectl on PATH and are skipped without it.
package e2e
