package v1alpha1_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var sagaGVK = schema.GroupVersionKind{Group: "saga.sagaops.io", Version: "v1alpha1", Kind: "OrderSaga"}

var _ = Describe("The samples in config/samples", func() {
	files, err := filepath.Glob(filepath.Join(repoRoot, "config", "samples", "*.yaml"))
	if err != nil || len(files) == 0 {
		It("exist", func() { Fail("no samples found in config/samples") })
		return
	}
	for _, file := range files {
		if filepath.Base(file) == "kustomization.yaml" {
			continue
		}
		It("accepts "+filepath.Base(file), func() {
			namespace := newNamespace("samples")
			objs := readManifests(file)
			Expect(objs).NotTo(BeEmpty())
			for _, obj := range objs {
				Expect(obj.GetNamespace()).To(BeEmpty(), "samples carry no namespace, so that they apply to any")
				obj.SetNamespace(namespace)
				Expect(k8sClient.Create(ctx, obj)).To(Succeed(), "%s %s", obj.GetKind(), obj.GetName())

				got := &unstructured.Unstructured{}
				got.SetGroupVersionKind(obj.GroupVersionKind())
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), got)).To(Succeed())
			}
		})
	}

	It("lists every sample in its kustomization", func() {
		data, err := os.ReadFile(filepath.Join(repoRoot, "config", "samples", "kustomization.yaml"))
		Expect(err).NotTo(HaveOccurred())
		for _, file := range files {
			if filepath.Base(file) != "kustomization.yaml" {
				Expect(string(data)).To(ContainSubstring("- "+filepath.Base(file)), "config/samples/kustomization.yaml")
			}
		}
	})
})

// readManifests decodes every document of a YAML file.
func readManifests(file string) []*unstructured.Unstructured {
	GinkgoHelper()
	data, err := os.ReadFile(file)
	Expect(err).NotTo(HaveOccurred())
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		obj := map[string]any{}
		err := decoder.Decode(&obj)
		if errors.Is(err, io.EOF) {
			return objs
		}
		Expect(err).NotTo(HaveOccurred(), file)
		if len(obj) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: obj})
	}
}
