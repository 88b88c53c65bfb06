package v1alpha1_test

import (
	"fmt"
	"strconv"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The admission tests build their objects as plain maps, not Go types, so
// that a manifest can hold what the Go types cannot express (a negative
// duration string, a missing required field, a wrong type) exactly as a user
// would write it.

const validSagaYAML = `
apiVersion: saga.sagaops.io/v1alpha1
kind: OrderSaga
metadata:
  name: placeholder
spec:
  order:
    orderId: "1001"
    userId: u-42
    currency: USD
    items:
    - {sku: SKU-1, quantity: 2, unitPriceCents: 1999}
  steps:
  - {name: create-order, participant: orders, action: create, compensation: cancel}
  - {name: process-payment, participant: payment, action: charge, compensation: refund, timeout: 5s, retry: {maxAttempts: 8}}
  - {name: reserve-inventory, participant: inventory, action: reserve, compensation: release}
  - {name: send-confirmation, participant: notification, action: send-confirmation, compensation: send-cancellation}
`

const validParticipantYAML = `
apiVersion: saga.sagaops.io/v1alpha1
kind: Participant
metadata:
  name: placeholder
spec:
  url: http://payment.shop.svc:8080
  timeout: 10s
  retry: {maxAttempts: 5, initialBackoff: 200ms, maxBackoff: 30s}
  auth:
    bearerTokenSecretRef: {name: payment-token, key: token}
`

// mutation changes a manifest before it is sent.
type mutation func(obj map[string]any)

// builder makes a manifest with the given name in the given namespace.
type builder func(name, namespace string) *unstructured.Unstructured

func fromYAML(doc string, muts ...mutation) builder {
	return func(name, namespace string) *unstructured.Unstructured {
		GinkgoHelper()
		obj := map[string]any{}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			Fail(fmt.Sprintf("bad test manifest: %v", err))
		}
		for _, m := range muts {
			m(obj)
		}
		u := &unstructured.Unstructured{Object: obj}
		u.SetName(name)
		u.SetNamespace(namespace)
		return u
	}
}

// saga is a valid OrderSaga (the reference shop's order) changed by muts.
func saga(muts ...mutation) builder { return fromYAML(validSagaYAML, muts...) }

// participant is a valid Participant changed by muts.
func participant(muts ...mutation) builder { return fromYAML(validParticipantYAML, muts...) }

// set replaces the value at path, written as the API server prints field
// paths: "spec.steps[0].name". value is a Go value or, when it is a string
// starting with "yaml:", the YAML after that prefix.
func set(path string, value any) mutation {
	return func(obj map[string]any) {
		GinkgoHelper()
		if s, ok := value.(string); ok && strings.HasPrefix(s, "yaml:") {
			var v any
			if err := yaml.Unmarshal([]byte(strings.TrimPrefix(s, "yaml:")), &v); err != nil {
				Fail(fmt.Sprintf("bad test value for %s: %v", path, err))
			}
			value = v
		}
		parent, last := walk(obj, path)
		switch p := parent.(type) {
		case map[string]any:
			p[last.(string)] = value
		case []any:
			p[last.(int)] = value
		}
	}
}

// unset removes the field at path.
func unset(path string) mutation {
	return func(obj map[string]any) {
		GinkgoHelper()
		parent, last := walk(obj, path)
		delete(parent.(map[string]any), last.(string))
	}
}

// steps replaces spec.steps with n valid steps named step-0 .. step-(n-1).
func steps(n int) mutation {
	list := make([]any, 0, n)
	for i := range n {
		list = append(list, map[string]any{
			"name": "step-" + strconv.Itoa(i), "participant": "orders", "action": "create", "compensation": "cancel",
		})
	}
	return set("spec.steps", list)
}

// items replaces spec.order.items with n valid items.
func items(n int) mutation {
	list := make([]any, 0, n)
	for i := range n {
		list = append(list, map[string]any{"sku": "SKU-" + strconv.Itoa(i), "quantity": int64(1), "unitPriceCents": int64(100)})
	}
	return set("spec.order.items", list)
}

// walk returns the container holding the last element of path and that
// element's key (a string for a map, an int for a list), creating missing maps.
func walk(obj map[string]any, path string) (any, any) {
	GinkgoHelper()
	keys := splitPath(path)
	var cur any = obj
	for _, k := range keys[:len(keys)-1] {
		switch c := cur.(type) {
		case map[string]any:
			name := k.(string)
			if _, ok := c[name]; !ok {
				c[name] = map[string]any{}
			}
			cur = c[name]
		case []any:
			cur = c[k.(int)]
		default:
			Fail(fmt.Sprintf("path %s goes through a %T", path, cur))
		}
	}
	return cur, keys[len(keys)-1]
}

func splitPath(path string) []any {
	var keys []any
	for _, part := range strings.Split(path, ".") {
		name, rest, _ := strings.Cut(part, "[")
		keys = append(keys, name)
		for rest != "" {
			idx, after, _ := strings.Cut(rest, "]")
			n, err := strconv.Atoi(idx)
			if err != nil {
				Fail(fmt.Sprintf("bad index in path %s", path))
			}
			keys = append(keys, n)
			rest = strings.TrimPrefix(after, "[")
		}
	}
	return keys
}
