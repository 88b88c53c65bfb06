package shop

import (
	"net/http"
	"time"

	"go.etcd.io/bbolt"

	"github.com/sagaops/saga-operator/internal/participants"
)

// Order statuses.
const (
	OrderPending   = "PENDING"
	OrderConfirmed = "CONFIRMED"
	OrderCancelled = "CANCELLED"
)

// Actions of the orders service.
const (
	ActionCreate  = "create"
	ActionConfirm = "confirm"
	ActionCancel  = "cancel"
)

var bucketOrders = []byte("orders")

// Order is an order at the orders service.
type Order struct {
	OrderID    string              `json:"orderId"`
	OrderRef   string              `json:"orderRef"`
	Status     string              `json:"status"`
	UserID     string              `json:"userId,omitempty"`
	Currency   string              `json:"currency,omitempty"`
	Items      []participants.Item `json:"items,omitempty"`
	TotalCents int64               `json:"totalCents"`
	// SagaUID and Step are the saga and step that created the order.
	SagaUID   string    `json:"sagaUid"`
	SagaID    string    `json:"sagaId,omitempty"`
	Step      string    `json:"step"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// OrdersLedger is the orders service's GET /admin/ledger.
type OrdersLedger struct {
	Orders   []Order        `json:"orders"`
	ByStatus map[string]int `json:"byStatus"`
}

// orderEffect is what an orders step touched: the order and the saga that
// created it (the order's incarnation: a cancelled order may be created again).
type orderEffect struct {
	OrderID   string `json:"orderId"`
	CreatedBy string `json:"createdBy"`
	// Previous is the order's status before the step.
	Previous string `json:"previous,omitempty"`
}

type ordersDomain struct{}

func (ordersDomain) actions() map[string]string {
	return map[string]string{
		ActionCreate:  participants.DirectionForward,
		ActionConfirm: participants.DirectionForward,
		ActionCancel:  participants.DirectionCompensate,
	}
}

func (ordersDomain) buckets() []string { return []string{string(bucketOrders)} }

func (ordersDomain) setup(*bbolt.Tx) error { return nil }

func getOrder(tx *bbolt.Tx, id string) (*Order, error) {
	var o Order
	found, err := getJSON(tx.Bucket(bucketOrders), []byte(id), &o)
	if err != nil || !found {
		return nil, err
	}
	return &o, nil
}

func putOrder(tx *bbolt.Tx, o *Order) error {
	return putJSON(tx.Bucket(bucketOrders), []byte(o.OrderID), o)
}

func orderRef(id string) string { return "ord-" + id }

func (ordersDomain) forward(c *call) (result, error) {
	in := c.req.Order
	if in.OrderID == "" {
		return rejectResult(http.StatusUnprocessableEntity, CodeInvalidOrder, "order.orderId is empty"), nil
	}
	existing, err := getOrder(c.tx, in.OrderID)
	if err != nil {
		return result{}, err
	}
	switch c.req.Action {
	case ActionCreate:
		if existing != nil && existing.Status != OrderCancelled {
			return rejectResult(http.StatusConflict, CodeOrderExists,
				"order %s already exists (%s, created by saga %s step %s)", in.OrderID, existing.Status, existing.SagaUID, existing.Step), nil
		}
		o := &Order{
			OrderID: in.OrderID, OrderRef: orderRef(in.OrderID), Status: OrderPending,
			UserID: in.UserID, Currency: in.Currency, Items: in.Items, TotalCents: in.TotalCents,
			SagaUID: c.req.SagaUID, SagaID: c.req.SagaID, Step: c.req.Step, CreatedAt: c.now, UpdatedAt: c.now,
		}
		if err := putOrder(c.tx, o); err != nil {
			return result{}, err
		}
		return okResult(map[string]string{"orderRef": o.OrderRef},
			"order "+o.OrderID+" "+OrderPending+" ("+o.OrderRef+")",
			orderEffect{OrderID: o.OrderID, CreatedBy: o.SagaUID}), nil
	default: // confirm
		if existing == nil {
			return rejectResult(http.StatusConflict, CodeOrderNotFound, "order %s does not exist", in.OrderID), nil
		}
		if existing.Status != OrderPending {
			return rejectResult(http.StatusConflict, CodeOrderNotPending, "order %s is %s, not %s", in.OrderID, existing.Status, OrderPending), nil
		}
		existing.Status, existing.UpdatedAt = OrderConfirmed, c.now
		if err := putOrder(c.tx, existing); err != nil {
			return result{}, err
		}
		return okResult(map[string]string{"orderRef": existing.OrderRef},
			"order "+existing.OrderID+" "+OrderConfirmed+" ("+existing.OrderRef+")",
			orderEffect{OrderID: existing.OrderID, CreatedBy: existing.SagaUID, Previous: OrderPending}), nil
	}
}

func (ordersDomain) compensate(c *call) (result, error) {
	var eff orderEffect
	if err := c.data(&eff); err != nil {
		return result{}, err
	}
	o, err := getOrder(c.tx, eff.OrderID)
	if err != nil {
		return result{}, err
	}
	if o == nil || o.SagaUID != eff.CreatedBy {
		return okResult(nil, "order "+eff.OrderID+" no longer exists: nothing to cancel", nil), nil
	}
	if o.Status != OrderCancelled {
		o.Status, o.UpdatedAt = OrderCancelled, c.now
		if err := putOrder(c.tx, o); err != nil {
			return result{}, err
		}
	}
	return okResult(nil, "order "+o.OrderID+" "+OrderCancelled+" ("+o.OrderRef+")", nil), nil
}

func (ordersDomain) tamper(c *call, op string) (string, error) {
	if op != OpDrop {
		return "", errBadOp
	}
	var eff orderEffect
	if err := c.data(&eff); err != nil {
		return "", err
	}
	o, err := getOrder(c.tx, eff.OrderID)
	if err != nil {
		return "", err
	}
	if o != nil && o.SagaUID == eff.CreatedBy {
		if err := c.tx.Bucket(bucketOrders).Delete([]byte(o.OrderID)); err != nil {
			return "", err
		}
	}
	return "order " + eff.OrderID + " dropped out of band", nil
}

func (ordersDomain) ledger(tx *bbolt.Tx) (any, error) {
	l := &OrdersLedger{Orders: []Order{}, ByStatus: map[string]int{}}
	err := eachJSON(tx.Bucket(bucketOrders), func(_ []byte, o Order) error {
		l.Orders = append(l.Orders, o)
		l.ByStatus[o.Status]++
		return nil
	})
	return l, err
}

func (ordersDomain) describe(_ *bbolt.Tx, rec *stepRecord) string { return rec.Detail }
