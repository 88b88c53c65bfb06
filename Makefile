# Image URL to use all building/pushing image targets
IMG ?= ghcr.io/sagaops/saga-operator:dev

# Tool versions, pinned.
CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.8.1
GINKGO_VERSION ?= v2.34.0
# Versions of the envtest binaries built from Go modules by hack/setup-envtest.sh.
KUBERNETES_VERSION ?= v1.37.2
ETCD_VERSION ?= v3.6.16

# Setting SHELL to bash allows bash commands to be executed by recipes.
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

LOCALBIN ?= $(shell pwd)/bin
$(LOCALBIN):
	mkdir -p $(LOCALBIN)

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
KUSTOMIZE ?= $(LOCALBIN)/kustomize
CONTAINER_TOOL ?= docker

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate CRDs and RBAC from the markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: envtest
envtest: ## Build kube-apiserver and etcd from Go modules into bin/k8s (no-op when cached).
	@KUBERNETES_VERSION=$(KUBERNETES_VERSION) ETCD_VERSION=$(ETCD_VERSION) LOCALBIN=$(LOCALBIN) hack/setup-envtest.sh >/dev/null

ENVTEST_ASSETS = $(shell KUBERNETES_VERSION=$(KUBERNETES_VERSION) ETCD_VERSION=$(ETCD_VERSION) LOCALBIN=$(LOCALBIN) hack/setup-envtest.sh 2>/dev/null)

.PHONY: test
test: manifests generate fmt vet envtest kustomize ## Run unit and envtest tests (the kubectl specs use bin/kustomize).
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go test ./... -timeout 20m

.PHONY: test-e2e
test-e2e: envtest ## Run the end-to-end tests alone: control plane, manager, shop services and kubectl as real processes.
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go test ./test/e2e/ -v -ginkgo.v -timeout 20m

.PHONY: demo
demo: ## Run the operator and the reference shop on a local control plane, apply the samples (DEMO_EXIT=1: exit after printing).
	@KUBERNETES_VERSION=$(KUBERNETES_VERSION) ETCD_VERSION=$(ETCD_VERSION) LOCALBIN=$(LOCALBIN) hack/demo.sh

.PHONY: bench
bench: envtest ## Run the benchmarks and print their figures.
	go test ./... -run '^$$' -bench . -timeout 20m
	SAGA_BENCH=1 KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go test -v ./internal/controller/ -count=1 -run TestControllers -ginkgo.label-filter=bench -timeout 20m

##@ Build

.PHONY: build
build: manifests generate fmt vet ## Build the manager binary.
	go build -o bin/manager ./cmd/manager

.PHONY: run
run: manifests generate fmt vet ## Run the manager against the cluster in your kubeconfig.
	go run ./cmd/manager

.PHONY: docker-build
docker-build: ## Build the manager image.
	$(CONTAINER_TOOL) build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the manager image.
	$(CONTAINER_TOOL) push $(IMG)

##@ Deployment

.PHONY: install
install: manifests kustomize ## Install the CRDs into the cluster in your kubeconfig.
	$(KUSTOMIZE) build config/crd | kubectl apply --server-side -f -

.PHONY: uninstall
uninstall: manifests kustomize ## Remove the CRDs from the cluster in your kubeconfig.
	$(KUSTOMIZE) build config/crd | kubectl delete --ignore-not-found -f -

.PHONY: validate-manifests
validate-manifests: kustomize ## Server-side dry run of config/default, config/prometheus and config/samples against the cluster in your kubeconfig.
	KUSTOMIZE=$(KUSTOMIZE) hack/validate-manifests.sh

.PHONY: deploy
deploy: manifests kustomize ## Deploy the operator to the cluster in your kubeconfig.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | kubectl apply --server-side -f -

.PHONY: undeploy
undeploy: kustomize ## Remove the operator from the cluster in your kubeconfig.
	$(KUSTOMIZE) build config/default | kubectl delete --ignore-not-found -f -

##@ Dependencies

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Install controller-gen into bin/.
$(CONTROLLER_GEN): | $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

.PHONY: kustomize
kustomize: $(KUSTOMIZE) ## Install kustomize into bin/.
$(KUSTOMIZE): | $(LOCALBIN)
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

# go-install-tool installs a Go package at a version into bin/ under a
# versioned name and links the plain name to it.
define go-install-tool
@[ -f "$(1)-$(3)" ] && [ "$$(readlink -- "$(1)" 2>/dev/null)" = "$$(basename $(1))-$(3)" ] || { \
set -e; \
package=$(2)@$(3) ;\
echo "Downloading $${package}" ;\
rm -f "$(1)" ;\
GOBIN="$(LOCALBIN)" go install $${package} ;\
mv "$(LOCALBIN)/$$(basename "$(1)")" "$(1)-$(3)" ;\
} ;\
ln -sf "$$(basename $(1))-$(3)" "$(1)"
endef
