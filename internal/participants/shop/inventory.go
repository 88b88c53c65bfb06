package shop

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/sagaops/saga-operator/internal/participants"
)

// Reservation statuses.
const (
	ReservationReserved = "RESERVED"
	ReservationReleased = "RELEASED"
	ReservationDropped  = "DROPPED"
)

// Actions of the inventory service.
const (
	ActionReserve = "reserve"
	ActionRelease = "release"
)

var (
	bucketStock        = []byte("stock")
	bucketReservations = []byte("reservations")
)

// StockLevel is one SKU's stock: Available + Reserved is constant.
type StockLevel struct {
	Available int64 `json:"available"`
	Reserved  int64 `json:"reserved"`
}

// ReservedItem is one SKU of a reservation.
type ReservedItem struct {
	SKU      string `json:"sku"`
	Quantity int64  `json:"quantity"`
}

// Reservation is a reservation at the inventory service.
type Reservation struct {
	ReservationID string         `json:"reservationId"`
	Status        string         `json:"status"`
	Items         []ReservedItem `json:"items"`
	OrderID       string         `json:"orderId,omitempty"`
	SagaUID       string         `json:"sagaUid"`
	SagaID        string         `json:"sagaId,omitempty"`
	Step          string         `json:"step"`
	CreatedAt     time.Time      `json:"createdAt"`
	UpdatedAt     time.Time      `json:"updatedAt"`
}

// InventoryLedger is the inventory service's GET /admin/ledger.
type InventoryLedger struct {
	Stock        map[string]StockLevel `json:"stock"`
	Reservations []Reservation         `json:"reservations"`
}

type inventoryEffect struct {
	ReservationSeq uint64 `json:"reservationSeq"`
	ReservationID  string `json:"reservationId"`
}

type inventoryDomain struct{ seed map[string]int64 }

func (inventoryDomain) actions() map[string]string {
	return map[string]string{
		ActionReserve: participants.DirectionForward,
		ActionRelease: participants.DirectionCompensate,
	}
}

func (inventoryDomain) buckets() []string {
	return []string{string(bucketStock), string(bucketReservations)}
}

// setup seeds the SKUs the database does not know yet.
func (d inventoryDomain) setup(tx *bbolt.Tx) error {
	b := tx.Bucket(bucketStock)
	for sku, q := range d.seed {
		if b.Get([]byte(sku)) != nil {
			continue
		}
		if err := putJSON(b, []byte(sku), StockLevel{Available: q}); err != nil {
			return err
		}
	}
	return nil
}

func getStock(tx *bbolt.Tx, sku string) (StockLevel, error) {
	var l StockLevel
	_, err := getJSON(tx.Bucket(bucketStock), []byte(sku), &l)
	return l, err
}

func (inventoryDomain) forward(c *call) (result, error) {
	items := c.req.Order.Items
	if len(items) == 0 {
		return rejectResult(http.StatusUnprocessableEntity, CodeInvalidOrder, "the order has no items"), nil
	}
	need := map[string]int64{}
	for i, it := range items {
		switch {
		case it.SKU == "":
			return rejectResult(http.StatusUnprocessableEntity, CodeInvalidOrder, "item %d has no sku", i), nil
		case it.Quantity < 1:
			return rejectResult(http.StatusUnprocessableEntity, CodeInvalidOrder, "item %d (%s): quantity %d is not at least 1", i, it.SKU, it.Quantity), nil
		case need[it.SKU] > math.MaxInt64-it.Quantity:
			return rejectResult(http.StatusUnprocessableEntity, CodeInvalidOrder, "item %d (%s): quantity overflows", i, it.SKU), nil
		}
		need[it.SKU] += it.Quantity
	}
	skus := sortedKeys(need)
	levels := map[string]StockLevel{}
	var short []string
	for _, sku := range skus {
		l, err := getStock(c.tx, sku)
		if err != nil {
			return result{}, err
		}
		if l.Available < need[sku] {
			short = append(short, fmt.Sprintf("%s: need %d, available %d", sku, need[sku], l.Available))
		}
		levels[sku] = l
	}
	if len(short) > 0 {
		return rejectResult(http.StatusConflict, CodeInsufficientStock, "insufficient stock, nothing reserved: %s", strings.Join(short, "; ")), nil
	}
	res := Reservation{
		Status: ReservationReserved, OrderID: c.req.Order.OrderID,
		SagaUID: c.req.SagaUID, SagaID: c.req.SagaID, Step: c.req.Step, CreatedAt: c.now, UpdatedAt: c.now,
	}
	sb := c.tx.Bucket(bucketStock)
	for _, sku := range skus {
		l := levels[sku]
		l.Available -= need[sku]
		l.Reserved += need[sku]
		if err := putJSON(sb, []byte(sku), l); err != nil {
			return result{}, err
		}
		res.Items = append(res.Items, ReservedItem{SKU: sku, Quantity: need[sku]})
	}
	rb := c.tx.Bucket(bucketReservations)
	seq, err := rb.NextSequence()
	if err != nil {
		return result{}, err
	}
	res.ReservationID = fmt.Sprintf("res-%d", seq)
	if err := putJSON(rb, seqKey(seq), res); err != nil {
		return result{}, err
	}
	return okResult(map[string]string{"reservationId": res.ReservationID},
		fmt.Sprintf("reserved %s (%s)", itemsString(res.Items), res.ReservationID),
		inventoryEffect{ReservationSeq: seq, ReservationID: res.ReservationID}), nil
}

func itemsString(items []ReservedItem) string {
	parts := make([]string, len(items))
	for i, it := range items {
		parts[i] = fmt.Sprintf("%s x%d", it.SKU, it.Quantity)
	}
	return strings.Join(parts, ", ")
}

// unreserve returns a reserved reservation's stock and gives it status to.
func unreserve(c *call, to string) (*Reservation, error) {
	var eff inventoryEffect
	if err := c.data(&eff); err != nil {
		return nil, err
	}
	rb := c.tx.Bucket(bucketReservations)
	var res Reservation
	found, err := getJSON(rb, seqKey(eff.ReservationSeq), &res)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("reservation %s of step %s of saga %s is missing", eff.ReservationID, c.rec.Step, c.rec.SagaUID)
	}
	if res.Status != ReservationReserved {
		return &res, nil
	}
	sb := c.tx.Bucket(bucketStock)
	for _, it := range res.Items {
		l, err := getStock(c.tx, it.SKU)
		if err != nil {
			return nil, err
		}
		l.Available += it.Quantity
		l.Reserved -= it.Quantity
		if err := putJSON(sb, []byte(it.SKU), l); err != nil {
			return nil, err
		}
	}
	res.Status, res.UpdatedAt = to, c.now
	return &res, putJSON(rb, seqKey(eff.ReservationSeq), res)
}

func (inventoryDomain) compensate(c *call) (result, error) {
	res, err := unreserve(c, ReservationReleased)
	if err != nil {
		return result{}, err
	}
	return okResult(nil, fmt.Sprintf("released %s (%s)", itemsString(res.Items), res.ReservationID), nil), nil
}

func (inventoryDomain) tamper(c *call, op string) (string, error) {
	if op != OpDrop {
		return "", errBadOp
	}
	res, err := unreserve(c, ReservationDropped)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("reservation %s dropped out of band, stock returned", res.ReservationID), nil
}

func (inventoryDomain) ledger(tx *bbolt.Tx) (any, error) {
	l := &InventoryLedger{Stock: map[string]StockLevel{}, Reservations: []Reservation{}}
	err := eachJSON(tx.Bucket(bucketStock), func(k []byte, s StockLevel) error {
		l.Stock[string(k)] = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = eachJSON(tx.Bucket(bucketReservations), func(_ []byte, r Reservation) error {
		l.Reservations = append(l.Reservations, r)
		return nil
	})
	return l, err
}

func (inventoryDomain) describe(_ *bbolt.Tx, rec *stepRecord) string { return rec.Detail }
