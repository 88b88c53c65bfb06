package shop

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/sagaops/saga-operator/internal/participants"
)

// Charge statuses.
const (
	ChargeCaptured = "CAPTURED"
	ChargeRefunded = "REFUNDED"
	ChargeVoided   = "VOIDED"
)

// Actions of the payment service.
const (
	ActionCharge = "charge"
	ActionRefund = "refund"
)

var (
	bucketCharges     = []byte("charges")
	bucketRefunds     = []byte("refunds")
	bucketOutstanding = []byte("outstanding")
)

// Charge is a charge at the payment service.
type Charge struct {
	PaymentID   string    `json:"paymentId"`
	Status      string    `json:"status"`
	UserID      string    `json:"userId"`
	Currency    string    `json:"currency"`
	AmountCents int64     `json:"amountCents"`
	OrderID     string    `json:"orderId,omitempty"`
	SagaUID     string    `json:"sagaUid"`
	SagaID      string    `json:"sagaId,omitempty"`
	Step        string    `json:"step"`
	RefundID    string    `json:"refundId,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// Refund is a refund at the payment service.
type Refund struct {
	RefundID    string    `json:"refundId"`
	PaymentID   string    `json:"paymentId"`
	UserID      string    `json:"userId"`
	Currency    string    `json:"currency"`
	AmountCents int64     `json:"amountCents"`
	SagaUID     string    `json:"sagaUid"`
	Step        string    `json:"step"`
	CreatedAt   time.Time `json:"createdAt"`
}

// MoneyTotals are the payment service's totals in one currency:
// ChargedCents = RefundedCents + VoidedCents + OutstandingCents.
type MoneyTotals struct {
	Charges          int   `json:"charges"`
	ChargedCents     int64 `json:"chargedCents"`
	RefundedCents    int64 `json:"refundedCents"`
	VoidedCents      int64 `json:"voidedCents"`
	OutstandingCents int64 `json:"outstandingCents"`
}

// PaymentLedger is the payment service's GET /admin/ledger.
type PaymentLedger struct {
	// LimitCents is the limit on a user's outstanding charges per currency
	// (0: none).
	LimitCents int64                  `json:"limitCents"`
	Charges    []Charge               `json:"charges"`
	Refunds    []Refund               `json:"refunds"`
	Totals     map[string]MoneyTotals `json:"totals"`
	// OutstandingByUser is the stored running balance, user to currency
	// to cents; it equals the sum of the user's captured charges.
	OutstandingByUser map[string]map[string]int64 `json:"outstandingByUser"`
}

type paymentEffect struct {
	PaymentSeq uint64 `json:"paymentSeq"`
	PaymentID  string `json:"paymentId"`
	RefundSeq  uint64 `json:"refundSeq,omitempty"`
	RefundID   string `json:"refundId,omitempty"`
}

type paymentDomain struct{ limit int64 }

func (paymentDomain) actions() map[string]string {
	return map[string]string{
		ActionCharge: participants.DirectionForward,
		ActionRefund: participants.DirectionCompensate,
	}
}

func (paymentDomain) buckets() []string {
	return []string{string(bucketCharges), string(bucketRefunds), string(bucketOutstanding)}
}

func (paymentDomain) setup(*bbolt.Tx) error { return nil }

func outstandingKey(user, currency string) []byte { return []byte(user + "\x00" + currency) }

func addOutstanding(tx *bbolt.Tx, user, currency string, delta int64) (int64, error) {
	b := tx.Bucket(bucketOutstanding)
	var cur int64
	if _, err := getJSON(b, outstandingKey(user, currency), &cur); err != nil {
		return 0, err
	}
	cur += delta
	if cur == 0 {
		return 0, b.Delete(outstandingKey(user, currency))
	}
	return cur, putJSON(b, outstandingKey(user, currency), cur)
}

func (d paymentDomain) forward(c *call) (result, error) {
	o := c.req.Order
	switch {
	case o.UserID == "":
		return rejectResult(http.StatusUnprocessableEntity, CodeInvalidOrder, "order.userId is empty"), nil
	case o.Currency == "":
		return rejectResult(http.StatusUnprocessableEntity, CodeInvalidOrder, "order.currency is empty"), nil
	case o.TotalCents < 0:
		return rejectResult(http.StatusUnprocessableEntity, CodeInvalidOrder, "order.totalCents is negative (%d)", o.TotalCents), nil
	}
	outstanding, err := addOutstanding(c.tx, o.UserID, o.Currency, 0)
	if err != nil {
		return result{}, err
	}
	if d.limit > 0 && o.TotalCents > d.limit-outstanding {
		return rejectResult(http.StatusUnprocessableEntity, CodeCardDeclined,
			"charging %d %s would bring the outstanding charges of %s to %d %s, over the limit of %d",
			o.TotalCents, o.Currency, o.UserID, outstanding+o.TotalCents, o.Currency, d.limit), nil
	}
	b := c.tx.Bucket(bucketCharges)
	seq, err := b.NextSequence()
	if err != nil {
		return result{}, err
	}
	ch := Charge{
		PaymentID: fmt.Sprintf("pay-%d", seq), Status: ChargeCaptured,
		UserID: o.UserID, Currency: o.Currency, AmountCents: o.TotalCents, OrderID: o.OrderID,
		SagaUID: c.req.SagaUID, SagaID: c.req.SagaID, Step: c.req.Step, CreatedAt: c.now, UpdatedAt: c.now,
	}
	if err := putJSON(b, seqKey(seq), ch); err != nil {
		return result{}, err
	}
	if _, err := addOutstanding(c.tx, o.UserID, o.Currency, o.TotalCents); err != nil {
		return result{}, err
	}
	return okResult(map[string]string{"paymentId": ch.PaymentID},
		fmt.Sprintf("captured %d %s (%s)", ch.AmountCents, ch.Currency, ch.PaymentID),
		paymentEffect{PaymentSeq: seq, PaymentID: ch.PaymentID}), nil
}

func (paymentDomain) loadCharge(c *call) (paymentEffect, *Charge, error) {
	var eff paymentEffect
	if err := c.data(&eff); err != nil {
		return eff, nil, err
	}
	var ch Charge
	found, err := getJSON(c.tx.Bucket(bucketCharges), seqKey(eff.PaymentSeq), &ch)
	if err != nil {
		return eff, nil, err
	}
	if !found {
		return eff, nil, fmt.Errorf("charge %s of step %s of saga %s is missing", eff.PaymentID, c.rec.Step, c.rec.SagaUID)
	}
	return eff, &ch, nil
}

func (d paymentDomain) compensate(c *call) (result, error) {
	eff, ch, err := d.loadCharge(c)
	if err != nil {
		return result{}, err
	}
	// The saga's outputs carry the paymentId too; the step's own record
	// decides, a disagreement is only noted.
	note := ""
	if id := c.req.Outputs[c.req.Step]["paymentId"]; id != "" && id != eff.PaymentID {
		note = fmt.Sprintf("; the saga's outputs named %s", id)
	}
	if ch.Status != ChargeCaptured {
		return okResult(nil, fmt.Sprintf("charge %s is %s: nothing to refund", ch.PaymentID, ch.Status), nil), nil
	}
	rb := c.tx.Bucket(bucketRefunds)
	seq, err := rb.NextSequence()
	if err != nil {
		return result{}, err
	}
	rf := Refund{
		RefundID: fmt.Sprintf("ref-%d", seq), PaymentID: ch.PaymentID, UserID: ch.UserID, Currency: ch.Currency,
		AmountCents: ch.AmountCents, SagaUID: c.req.SagaUID, Step: c.req.Step, CreatedAt: c.now,
	}
	if err := putJSON(rb, seqKey(seq), rf); err != nil {
		return result{}, err
	}
	ch.Status, ch.RefundID, ch.UpdatedAt = ChargeRefunded, rf.RefundID, c.now
	if err := putJSON(c.tx.Bucket(bucketCharges), seqKey(eff.PaymentSeq), ch); err != nil {
		return result{}, err
	}
	if _, err := addOutstanding(c.tx, ch.UserID, ch.Currency, -ch.AmountCents); err != nil {
		return result{}, err
	}
	eff.RefundSeq, eff.RefundID = seq, rf.RefundID
	return okResult(map[string]string{"refundId": rf.RefundID},
		fmt.Sprintf("refunded %d %s (%s, %s)%s", rf.AmountCents, rf.Currency, ch.PaymentID, rf.RefundID, note), eff), nil
}

func (d paymentDomain) tamper(c *call, op string) (string, error) {
	if op != OpVoid && op != OpDrop {
		return "", errBadOp
	}
	eff, ch, err := d.loadCharge(c)
	if err != nil {
		return "", err
	}
	if ch.Status == ChargeCaptured {
		ch.Status, ch.UpdatedAt = ChargeVoided, c.now
		if err := putJSON(c.tx.Bucket(bucketCharges), seqKey(eff.PaymentSeq), ch); err != nil {
			return "", err
		}
		if _, err := addOutstanding(c.tx, ch.UserID, ch.Currency, -ch.AmountCents); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("charge %s voided out of band", ch.PaymentID), nil
}

func (d paymentDomain) ledger(tx *bbolt.Tx) (any, error) {
	l := &PaymentLedger{
		LimitCents: max(d.limit, 0), Charges: []Charge{}, Refunds: []Refund{},
		Totals: map[string]MoneyTotals{}, OutstandingByUser: map[string]map[string]int64{},
	}
	err := eachJSON(tx.Bucket(bucketCharges), func(_ []byte, ch Charge) error {
		l.Charges = append(l.Charges, ch)
		t := l.Totals[ch.Currency]
		t.Charges++
		t.ChargedCents += ch.AmountCents
		switch ch.Status {
		case ChargeRefunded:
			t.RefundedCents += ch.AmountCents
		case ChargeVoided:
			t.VoidedCents += ch.AmountCents
		default:
			t.OutstandingCents += ch.AmountCents
		}
		l.Totals[ch.Currency] = t
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = eachJSON(tx.Bucket(bucketRefunds), func(_ []byte, rf Refund) error {
		l.Refunds = append(l.Refunds, rf)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = eachJSON(tx.Bucket(bucketOutstanding), func(k []byte, n int64) error {
		user, currency, _ := strings.Cut(string(k), "\x00")
		if l.OutstandingByUser[user] == nil {
			l.OutstandingByUser[user] = map[string]int64{}
		}
		l.OutstandingByUser[user][currency] = n
		return nil
	})
	return l, err
}

func (paymentDomain) describe(_ *bbolt.Tx, rec *stepRecord) string { return rec.Detail }
