package shop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/sagaops/saga-operator/internal/participants"
)

// Actions of the notification service.
const (
	ActionSendConfirmation = "send-confirmation"
	ActionSendCancellation = "send-cancellation"
)

// Message kinds.
const (
	MessageConfirmation = "order-confirmation"
	MessageCancellation = "order-cancellation"
)

var (
	bucketOutbox    = []byte("outbox")
	bucketDelivered = []byte("delivered")
)

// Message is a message of the notification service, pending in the outbox
// or delivered.
type Message struct {
	MessageID     string     `json:"messageId"`
	Kind          string     `json:"kind"`
	To            string     `json:"to"`
	Subject       string     `json:"subject"`
	Text          string     `json:"text"`
	OrderID       string     `json:"orderId,omitempty"`
	SagaUID       string     `json:"sagaUid"`
	SagaID        string     `json:"sagaId,omitempty"`
	Step          string     `json:"step"`
	CreatedAt     time.Time  `json:"createdAt"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt *time.Time `json:"nextAttemptAt,omitempty"`
	LastError     string     `json:"lastError,omitempty"`
	DeliveredAt   *time.Time `json:"deliveredAt,omitempty"`
}

// NotificationLedger is the notification service's GET /admin/ledger.
type NotificationLedger struct {
	Pending           []Message `json:"pending"`
	Delivered         []Message `json:"delivered"`
	DeliveryFaultRate float64   `json:"deliveryFaultRate"`
	WebhookURL        string    `json:"webhookURL,omitempty"`
}

type notificationEffect struct {
	ConfirmationSeq uint64 `json:"confirmationSeq"`
	ConfirmationID  string `json:"confirmationId"`
	CancellationSeq uint64 `json:"cancellationSeq,omitempty"`
	CancellationID  string `json:"cancellationId,omitempty"`
}

type notificationDomain struct {
	cfg    *config
	faults func() float64
}

func (*notificationDomain) actions() map[string]string {
	return map[string]string{
		ActionSendConfirmation: participants.DirectionForward,
		ActionSendCancellation: participants.DirectionCompensate,
	}
}

func (*notificationDomain) buckets() []string {
	return []string{string(bucketOutbox), string(bucketDelivered)}
}

func (*notificationDomain) setup(*bbolt.Tx) error { return nil }

func enqueue(c *call, m Message) (uint64, Message, error) {
	b := c.tx.Bucket(bucketOutbox)
	seq, err := b.NextSequence()
	if err != nil {
		return 0, m, err
	}
	m.MessageID = fmt.Sprintf("msg-%d", seq)
	m.SagaUID, m.SagaID, m.Step, m.CreatedAt = c.req.SagaUID, c.req.SagaID, c.req.Step, c.now
	next := c.now
	m.NextAttemptAt = &next
	return seq, m, putJSON(b, seqKey(seq), m)
}

func (*notificationDomain) forward(c *call) (result, error) {
	o := c.req.Order
	if o.UserID == "" {
		return rejectResult(http.StatusUnprocessableEntity, CodeInvalidOrder, "order.userId is empty: no recipient"), nil
	}
	seq, m, err := enqueue(c, Message{
		Kind: MessageConfirmation, To: o.UserID, OrderID: o.OrderID,
		Subject: fmt.Sprintf("Order %s confirmed", o.OrderID),
		Text:    fmt.Sprintf("Your order %s (%d items, %d %s) is confirmed.", o.OrderID, len(o.Items), o.TotalCents, o.Currency),
	})
	if err != nil {
		return result{}, err
	}
	return okResult(map[string]string{"messageId": m.MessageID},
		fmt.Sprintf("confirmation %s to %s queued", m.MessageID, m.To),
		notificationEffect{ConfirmationSeq: seq, ConfirmationID: m.MessageID}), nil
}

// findMessage returns the message from the outbox or the delivered bucket.
func findMessage(tx *bbolt.Tx, seq uint64) (*Message, bool, error) {
	for _, name := range [][]byte{bucketOutbox, bucketDelivered} {
		var m Message
		found, err := getJSON(tx.Bucket(name), seqKey(seq), &m)
		if err != nil {
			return nil, false, err
		}
		if found {
			return &m, string(name) == string(bucketDelivered), nil
		}
	}
	return nil, false, nil
}

func (*notificationDomain) compensate(c *call) (result, error) {
	var eff notificationEffect
	if err := c.data(&eff); err != nil {
		return result{}, err
	}
	to := c.req.Order.UserID
	conf, _, err := findMessage(c.tx, eff.ConfirmationSeq)
	if err != nil {
		return result{}, err
	}
	if conf != nil {
		to = conf.To
	}
	seq, m, err := enqueue(c, Message{
		Kind: MessageCancellation, To: to, OrderID: c.req.Order.OrderID,
		Subject: fmt.Sprintf("Order %s cancelled", c.req.Order.OrderID),
		Text:    fmt.Sprintf("Your order %s is cancelled; please ignore the confirmation %s.", c.req.Order.OrderID, eff.ConfirmationID),
	})
	if err != nil {
		return result{}, err
	}
	eff.CancellationSeq, eff.CancellationID = seq, m.MessageID
	return okResult(map[string]string{"messageId": m.MessageID},
		fmt.Sprintf("cancellation %s to %s queued", m.MessageID, m.To), eff), nil
}

func (*notificationDomain) tamper(c *call, op string) (string, error) {
	if op != OpDrop {
		return "", errBadOp
	}
	var eff notificationEffect
	if err := c.data(&eff); err != nil {
		return "", err
	}
	for _, name := range [][]byte{bucketOutbox, bucketDelivered} {
		if err := c.tx.Bucket(name).Delete(seqKey(eff.ConfirmationSeq)); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("confirmation %s dropped out of band", eff.ConfirmationID), nil
}

func (d *notificationDomain) ledger(tx *bbolt.Tx) (any, error) {
	l := &NotificationLedger{Pending: []Message{}, Delivered: []Message{}, WebhookURL: d.cfg.webhookURL}
	if d.faults != nil {
		l.DeliveryFaultRate = d.faults()
	}
	for _, x := range []struct {
		name []byte
		into *[]Message
	}{{bucketOutbox, &l.Pending}, {bucketDelivered, &l.Delivered}} {
		err := eachJSON(tx.Bucket(x.name), func(_ []byte, m Message) error {
			*x.into = append(*x.into, m)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return l, nil
}

// describe adds the delivery status of the step's last message.
func (*notificationDomain) describe(tx *bbolt.Tx, rec *stepRecord) string {
	var eff notificationEffect
	if len(rec.Data) == 0 || json.Unmarshal(rec.Data, &eff) != nil {
		return rec.Detail
	}
	seq, what := eff.ConfirmationSeq, "confirmation"
	if rec.State == participants.StateCompensated && eff.CancellationSeq != 0 {
		seq, what = eff.CancellationSeq, "cancellation"
	} else if rec.State != participants.StateApplied {
		return rec.Detail
	}
	m, delivered, err := findMessage(tx, seq)
	switch {
	case err != nil || m == nil:
		return rec.Detail
	case delivered:
		return fmt.Sprintf("%s %s to %s delivered at %s", what, m.MessageID, m.To, m.DeliveredAt.Format(time.RFC3339))
	case m.Attempts > 0:
		return fmt.Sprintf("%s %s to %s queued, delivery pending (%d failed attempts, last: %s)", what, m.MessageID, m.To, m.Attempts, m.LastError)
	default:
		return fmt.Sprintf("%s %s to %s queued, delivery pending", what, m.MessageID, m.To)
	}
}

// dispatcher delivers the outbox: one goroutine, so a message is never
// delivered twice concurrently; each delivery is recorded in one
// transaction that moves the message from the outbox to the delivered
// bucket.
type dispatcher struct {
	s    *Service
	wake chan struct{}

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

const dispatchBatch = 64

func newDispatcher(s *Service) *dispatcher {
	d := &dispatcher{s: s, wake: make(chan struct{}, 1)}
	if nd, ok := s.dom.(*notificationDomain); ok {
		nd.faults = s.faults.delivery
	}
	return d
}

func (d *dispatcher) notify() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cancel != nil {
		return errors.New("notification: dispatcher already started")
	}
	ctx, cancel := context.WithCancel(ctx)
	d.cancel, d.done = cancel, make(chan struct{})
	go d.run(ctx, d.done)
	return nil
}

func (d *dispatcher) stop() {
	d.mu.Lock()
	cancel, done := d.cancel, d.done
	d.cancel, d.done = nil, nil
	d.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

func (d *dispatcher) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	for {
		wait, err := d.dispatchDue(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			d.s.log.Error("outbox dispatch failed", "err", err)
			wait = d.s.cfg.pollInterval
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-d.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// dispatchDue delivers the messages that are due and returns how long to
// wait before the next one is.
func (d *dispatcher) dispatchDue(ctx context.Context) (time.Duration, error) {
	type due struct {
		seq uint64
		m   Message
	}
	var batch []due
	now := d.s.cfg.now()
	err := d.s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.First(); k != nil && len(batch) < dispatchBatch; k, v = c.Next() {
			var m Message
			if err := json.Unmarshal(v, &m); err != nil {
				return err
			}
			if m.NextAttemptAt == nil || !m.NextAttemptAt.After(now) {
				batch = append(batch, due{seqFromKey(k), m})
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, x := range batch {
		if ctx.Err() != nil {
			return 0, nil
		}
		derr := d.deliver(ctx, &x.m)
		if ctx.Err() != nil {
			return 0, nil // stopped mid-delivery: not an attempt
		}
		if err := d.record(x.seq, derr); err != nil {
			return 0, err
		}
	}
	if len(batch) == dispatchBatch {
		return 0, nil
	}
	wait := d.s.cfg.pollInterval
	now = d.s.cfg.now()
	err = d.s.db.View(func(tx *bbolt.Tx) error {
		return eachJSON(tx.Bucket(bucketOutbox), func(_ []byte, m Message) error {
			next := time.Duration(0)
			if m.NextAttemptAt != nil {
				next = m.NextAttemptAt.Sub(now)
			}
			wait = max(min(wait, next), time.Millisecond)
			return nil
		})
	})
	return wait, err
}

func seqFromKey(k []byte) uint64 {
	var n uint64
	for _, b := range k {
		n = n<<8 | uint64(b)
	}
	return n
}

func (d *dispatcher) deliver(ctx context.Context, m *Message) error {
	if d.s.faults.roll(d.s.faults.delivery()) {
		return errors.New("injected delivery fault")
	}
	url := d.s.cfg.webhookURL
	if url == "" {
		return nil
	}
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(participants.HeaderIdempotencyKey, m.MessageID)
	resp, err := d.s.cfg.httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// record moves a delivered message to the delivered bucket, or schedules
// the next attempt of a failed one, in one transaction.
func (d *dispatcher) record(seq uint64, derr error) error {
	now := d.s.cfg.now().UTC()
	return d.s.db.Update(func(tx *bbolt.Tx) error {
		ob := tx.Bucket(bucketOutbox)
		var m Message
		found, err := getJSON(ob, seqKey(seq), &m)
		if err != nil || !found {
			return err // gone (tampered): nothing to record
		}
		m.Attempts++
		if derr == nil {
			m.DeliveredAt, m.NextAttemptAt, m.LastError = &now, nil, ""
			if err := ob.Delete(seqKey(seq)); err != nil {
				return err
			}
			d.s.log.Info("message delivered", "messageId", m.MessageID, "kind", m.Kind, "to", m.To, "attempts", m.Attempts)
			return putJSON(tx.Bucket(bucketDelivered), seqKey(seq), m)
		}
		next := now.Add(d.backoff(m.Attempts))
		m.NextAttemptAt, m.LastError = &next, derr.Error()
		d.s.log.Info("message delivery failed", "messageId", m.MessageID, "attempts", m.Attempts, "err", derr, "next", next)
		return putJSON(ob, seqKey(seq), m)
	})
}

// backoff is the wait after the given number of failed attempts: the
// initial backoff doubled per attempt, capped, with jitter.
func (d *dispatcher) backoff(attempts int) time.Duration {
	b := d.s.cfg.backoffInitial
	for i := 1; i < attempts && b < d.s.cfg.backoffMax; i++ {
		b *= 2
	}
	return d.s.faults.jitter(min(b, d.s.cfg.backoffMax))
}
