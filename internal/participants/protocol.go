// Package participants implements the participant protocol (PROTOCOL.md,
// version 1): the wire types shared by both sides, the client the operator
// uses to call participants, and the reference services.
package participants

import "fmt"

// Paths of protocol version 1.
const (
	ActionPathPrefix = "/saga/v1/actions/"
	StatePathPrefix  = "/saga/v1/sagas/"
	HealthPath       = "/healthz"
)

// Headers of an action call.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderSagaID         = "Saga-Id"
)

// Directions as they appear on the wire.
const (
	DirectionForward    = "forward"
	DirectionCompensate = "compensate"
)

// Limits the caller enforces on answers.
const (
	MaxResponseBytes = 64 << 10
	MaxOutputs       = 16
	MaxOutputKeyLen  = 63
	MaxOutputValLen  = 256
)

// States a participant reports for a step.
const (
	StateApplied     = "applied"
	StateCompensated = "compensated"
	StateNone        = "none"
)

// IdempotencyKey is the key of every call of one (saga, step, direction):
// retries reuse it, so a participant applies the effect at most once.
func IdempotencyKey(sagaUID, step, direction string) string {
	return fmt.Sprintf("%s:%s:%s", sagaUID, step, direction)
}

// Item is one order line on the wire.
type Item struct {
	SKU            string `json:"sku"`
	Quantity       int64  `json:"quantity"`
	UnitPriceCents int64  `json:"unitPriceCents"`
}

// Order is the order on the wire, with its total.
type Order struct {
	OrderID    string `json:"orderId"`
	UserID     string `json:"userId"`
	Currency   string `json:"currency"`
	Items      []Item `json:"items"`
	TotalCents int64  `json:"totalCents"`
}

// ActionRequest is the body of POST /saga/v1/actions/{action}.
type ActionRequest struct {
	SagaID    string                       `json:"sagaId"`
	SagaUID   string                       `json:"sagaUid"`
	Step      string                       `json:"step"`
	Action    string                       `json:"action"`
	Direction string                       `json:"direction"`
	Attempt   int32                        `json:"attempt"`
	Order     Order                        `json:"order"`
	Outputs   map[string]map[string]string `json:"outputs"`
}

// ActionResponse is the body of a 200 (outputs optional) or a 202 (retryAfterSeconds).
type ActionResponse struct {
	Outputs           map[string]string `json:"outputs,omitempty"`
	RetryAfterSeconds *int              `json:"retryAfterSeconds,omitempty"`
}

// ErrorBody is the body of a 409/422 (and of other errors, where present).
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail describes a rejection.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// StepState is one step in a state query answer.
type StepState struct {
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
}

// StateResponse is the body of GET /saga/v1/sagas/{uid}.
type StateResponse struct {
	Steps map[string]StepState `json:"steps"`
}
