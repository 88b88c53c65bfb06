// Package shop implements the reference participant services of the saga
// operator: orders, payment, inventory and notification. Each is an
// http.Handler over its own bbolt database file and implements the callee
// side of the participant protocol, version 1 (PROTOCOL.md), with its five
// guarantees.
//
// # Endpoints (every service)
//
//	POST /saga/v1/actions/{action}   forward and compensating actions
//	GET  /saga/v1/sagas/{uid}        per-step state: applied | compensated | none, with a detail
//	GET  /healthz                    200 once the database is open
//	GET  /admin/ledger               the service's books (see below)
//	GET  /admin/faults               the fault injection in force
//	POST /admin/faults               {"action": "charge", "transientRate": 0.1, "latencyMs": 50, "lostReplyRate": 0.05}
//	POST /admin/tamper               {"sagaUid": "...", "step": "...", "op": "void"|"drop"|"forget-key", "forgetKey": true}
//
// The admin endpoints are unauthenticated: they exist to demonstrate the
// operator, so bind the services to a loopback address. WithBearerToken
// makes the protocol endpoints (actions and state query) require
// "Authorization: Bearer <token>".
//
// # How an action call is processed
//
// Protocol-level validation comes first and stores nothing: a missing
// Idempotency-Key, a body that is not a JSON ActionRequest, a missing
// sagaUid or step, a direction other than forward/compensate, an action in
// the body that differs from the path, or a direction that does not match
// the action (a forward action called with direction compensate) answers 400;
// an unknown action 404; a body over 1 MiB 413. Like any request that never
// reached the business logic, these are not recorded under the key, so a
// corrected call with the same key is processed normally.
//
// Everything after that happens in one bbolt Update transaction, which is
// fsynced on commit (unless WithNoSync): the Idempotency-Key is looked up and,
// when present, the stored status and body are returned verbatim (with the
// header Idempotent-Replayed: true); otherwise the per-(sagaUid, step) record
// decides, the business rule runs, and the effect, the step record and the
// key record holding the answer are written together. The answer is sent
// only after the commit, so a 200 is durable and a crash can never keep the
// effect and lose the key, or the reverse.
//
// The step record also makes the service idempotent per step, whatever the
// key: a forward call for a step already applied answers 200 with the
// outputs it produced (no second effect), a compensating call for a step
// already compensated answers 200. This is what makes the "forget-key"
// tamper harmless.
//
// The five guarantees:
//
//  1. Idempotency: the key record stores the first answer; keys are kept
//     forever (the protocol asks for at least 24 h).
//  2. Durable before answering: one transaction, fsync on commit.
//  3. Compensation without a forward call: a compensating call for a step
//     in state none (never received, or rejected) answers 200 and records
//     the step as compensated, a tombstone; nothing is undone.
//  4. No effect after compensation: a forward call for a compensated step
//     (tombstone or real) answers 409 already_compensated and applies
//     nothing.
//  5. Rejections are clean: a 409/422 writes the key record and a step
//     record in state none whose detail names the rejection, nothing else.
//
// Errors carry {"error": {"code": ..., "message": ...}}. Internal failures
// (a database error) answer 500, roll the transaction back and store
// nothing, so the caller retries with the same key.
//
// # Business rules
//
// orders (actions create, confirm: forward; cancel: compensate). Orders are
// keyed by order.orderId. create records the order PENDING and outputs
// {"orderRef": "ord-<orderId>"}; it is rejected 409 order_exists when the
// order exists and is not CANCELLED (a cancelled order may be created again
// by a new saga). confirm is an optional forward step after create: it marks
// a PENDING order CONFIRMED (409 order_not_found / order_not_pending
// otherwise). cancel compensates either: it marks the order CANCELLED,
// provided the order is still the one that step touched. An order without
// orderId is rejected 422 invalid_order.
//
// payment (charge: forward; refund: compensate). charge captures
// order.totalCents for order.userId, provided the user's outstanding
// charges in that currency (captured, not refunded or voided) stay within
// the limit (WithPaymentLimit, default 1,000,000 cents; 0 or less means no
// limit); over it the call is declined 422 card_declined. It outputs
// {"paymentId": "pay-<n>"}. refund reverses the charge the step made, found
// through the step's own record (the paymentId in the saga's outputs is only
// cross-checked) and outputs {"refundId": "ref-<n>"}. The ledger keeps
// charges, refunds, per-currency totals (charged = refunded + voided +
// outstanding) and the outstanding amount per user.
//
// inventory (reserve: forward; release: compensate). Stock per SKU is
// seeded by WithStock (SKUs already in the database keep their stored
// levels; an unknown SKU has no stock). reserve takes every line of the
// order (lines of the same SKU add up) or nothing: when any SKU is short it
// answers 409 insufficient_stock naming each short SKU and reserves nothing.
// It outputs {"reservationId": "res-<n>"}. release returns the reserved
// quantities. For every SKU available + reserved stays equal to its seed.
//
// notification (send-confirmation: forward; send-cancellation: compensate,
// the compensation of send-confirmation). Both write a message to the outbox
// bucket in the same transaction as the step record and output
// {"messageId": "msg-<n>"}. A dispatcher goroutine (Start/Stop) delivers the
// outbox: delivery appends the message to the delivered bucket and removes
// it from the outbox in one transaction, so each outbox entry is delivered
// exactly once; with WithWebhook it is first POSTed to the URL (header
// Idempotency-Key: msg-<n>, at least once: a crash between the POST and the
// commit repeats it). A failed delivery (an injected fault, see
// WithDeliveryFaultRate, or a webhook error) is retried with exponential
// backoff and jitter. The step of send-confirmation reads applied once the
// confirmation is in the outbox and compensated once the cancellation is;
// the detail says whether the message has been delivered.
//
// # Fault injection
//
// Per service and per action (or for every action, action "" or "*"), set by
// WithFault or POST /admin/faults: latencyMs delays the answer;
// transientRate answers 503 unavailable before anything is read or applied;
// lostReplyRate applies and commits the call, then closes the connection
// without answering (http.Hijacker), as a crash or a network cut after the
// commit would. Decisions come from a seeded math/rand/v2 source (WithSeed)
// guarded by a mutex.
//
// # Tampering
//
// POST /admin/tamper changes a step out of band, to show the operator's
// consistency checker at work. On a step in state applied, op "void"
// (payment) or "drop" (every service) removes the effect and sets the state
// to none: payment voids the charge, inventory drops the reservation and
// returns its stock, orders deletes the order, notification deletes the
// message. op "forget-key" deletes the idempotency record of the step's
// forward key and changes nothing else; "forgetKey": true does the same in
// addition to void/drop. Dropping the effect and its key together simulates
// a restore from an old backup: re-sending the forward call with its
// original key applies the effect again (the operator's repair: Redrive).
package shop
