package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagaops/saga-operator/internal/participants"
	"github.com/sagaops/saga-operator/internal/participants/shop"
)

// syncBuffer is a bytes.Buffer safe for the logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startRun runs the binary's run on free ports and returns the addresses
// and a function that stops it and returns its error.
func startRun(t *testing.T, args ...string) (map[shop.Kind]string, *syncBuffer, func() error) {
	t.Helper()
	for _, k := range shop.Kinds() {
		args = append(args, "--"+string(k)+"-addr", "127.0.0.1:0")
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	addrs := make(chan map[shop.Kind]string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, logs, func(a map[shop.Kind]string) { addrs <- a }) }()
	select {
	case a := <-addrs:
		return a, logs, func() error { cancel(); return <-done }
	case err := <-done:
		cancel()
		t.Fatalf("run: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("run did not start\n%s", logs)
	}
	return nil, nil, nil
}

func post(t *testing.T, addr, action, direction string, req participants.ActionRequest) (int, string) {
	t.Helper()
	req.Action, req.Direction, req.Attempt = action, direction, 1
	b, _ := json.Marshal(req)
	hr, _ := http.NewRequest(http.MethodPost, "http://"+addr+participants.ActionPathPrefix+action, bytes.NewReader(b))
	hr.Header.Set(participants.HeaderIdempotencyKey, participants.IdempotencyKey(req.SagaUID, req.Step, direction))
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestRunServesAndShutsDown(t *testing.T) {
	dir := t.TempDir()
	stockFile := filepath.Join(dir, "stock.json")
	if err := os.WriteFile(stockFile, []byte(`{"SKU-1": 3, "SKU-7": 9}`), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	addrs, logs, stop := startRun(t, "--data-dir", data, "--stock-file", stockFile, "--stock", "SKU-1=5",
		"--payment-limit-cents", "1000", "--no-sync")
	for _, k := range shop.Kinds() {
		if code, body := get(t, "http://"+addrs[k]+"/healthz"); code != http.StatusOK || !strings.Contains(body, string(k)) {
			t.Fatalf("%s healthz: %d %s", k, code, body)
		}
		if !strings.Contains(logs.String(), "service="+string(k)+" addr="+addrs[k]) {
			t.Fatalf("no start line for %s:\n%s", k, logs)
		}
	}
	o := participants.Order{OrderID: "1", UserID: "u-1", Currency: "USD", TotalCents: 1001,
		Items: []participants.Item{{SKU: "SKU-1", Quantity: 5, UnitPriceCents: 1}}}
	req := participants.ActionRequest{SagaUID: "uid-1", Step: "s", Order: o}
	if code, body := post(t, addrs[shop.KindOrders], shop.ActionCreate, participants.DirectionForward, req); code != 200 || body != `{"outputs":{"orderRef":"ord-1"}}` {
		t.Fatalf("create: %d %s", code, body)
	}
	if code, body := post(t, addrs[shop.KindPayment], shop.ActionCharge, participants.DirectionForward, req); code != 422 || !strings.Contains(body, shop.CodeCardDeclined) {
		t.Fatalf("charge over the limit: %d %s", code, body)
	}
	if code, body := post(t, addrs[shop.KindInventory], shop.ActionReserve, participants.DirectionForward, req); code != 200 {
		t.Fatalf("reserve: %d %s", code, body)
	}
	_, ledger := get(t, "http://"+addrs[shop.KindInventory]+"/admin/ledger")
	var il shop.InventoryLedger
	_ = json.Unmarshal([]byte(ledger), &il)
	// --stock overrides the file's SKU-1; the file adds SKU-7; the default SKU-2 is gone.
	if il.Stock["SKU-1"] != (shop.StockLevel{Available: 0, Reserved: 5}) || il.Stock["SKU-7"].Available != 9 || len(il.Stock) != 2 {
		t.Fatalf("stock: %+v", il.Stock)
	}
	if code, _ := post(t, addrs[shop.KindNotification], shop.ActionSendConfirmation, participants.DirectionForward, req); code != 200 {
		t.Fatal("send-confirmation failed")
	}
	if err := stop(); err != nil {
		t.Fatalf("run returned %v\n%s", err, logs)
	}
	for _, k := range shop.Kinds() {
		if _, err := os.Stat(filepath.Join(data, string(k)+".db")); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(logs.String(), "shutting down") {
		t.Fatalf("no shutdown line:\n%s", logs)
	}

	// Restart over the same files: the dispatcher delivers the message, the
	// state survives, and the same key replays.
	addrs, logs, stop = startRun(t, "--data-dir", data, "--no-sync")
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("second run returned %v", err)
		}
	}()
	if code, body := post(t, addrs[shop.KindOrders], shop.ActionCreate, participants.DirectionForward, req); code != 200 || body != `{"outputs":{"orderRef":"ord-1"}}` {
		t.Fatalf("replay after restart: %d %s", code, body)
	}
	if _, body := get(t, "http://"+addrs[shop.KindPayment]+"/saga/v1/sagas/uid-1"); !strings.Contains(body, `"state":"none"`) {
		t.Fatalf("payment state: %s", body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, "http://"+addrs[shop.KindNotification]+"/admin/ledger")
		var nl shop.NotificationLedger
		_ = json.Unmarshal([]byte(body), &nl)
		if len(nl.Delivered) == 1 && len(nl.Pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not delivered: %s\n%s", body, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--stock", "SKU-1"},
		{"--stock-file", filepath.Join(dir, "missing")},
		{"--fault-services", "warehouse"},
		{"--fault-transient-rate", "2"},
		{"--fault-delivery-rate", "-1"},
		{"--log-level", "loud"},
		{"extra-arg"},
		{"--no-such-flag"},
	} {
		args = append(args, "--data-dir", filepath.Join(dir, "d"))
		if err := run(context.Background(), args, io.Discard, nil); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
