// Command shopctl is the demo's small client of the reference shop services
// (cmd/participants), so that `make demo` needs nothing but Go and kubectl.
//
//	shopctl ledger [--json] [--orders URL] [--payment URL] [--inventory URL] [--notification URL]
//	    prints each service's books (GET /admin/ledger) as tables
//	shopctl wait [--timeout 60s] URL...
//	    waits until every URL answers 200 (a /healthz or /readyz endpoint)
//	shopctl tamper --url URL --saga-uid UID --step STEP [--op drop|void|forget-key] [--forget-key]
//	    changes a service's state out of band (POST /admin/tamper)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sagaops/saga-operator/internal/participants/shop"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "ledger":
		err = ledgerCmd(os.Args[2:])
	case "wait":
		err = waitCmd(os.Args[2:])
	case "tamper":
		err = tamperCmd(os.Args[2:])
	case "-h", "--help", "help":
		usage()
		return
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "shopctl:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `Usage:
  shopctl ledger [--json] [--orders URL] [--payment URL] [--inventory URL] [--notification URL]
      print each reference service's books (GET /admin/ledger)
  shopctl wait [--timeout 60s] URL...
      wait until every URL answers 200
  shopctl tamper --url URL --saga-uid UID --step STEP [--op drop|void|forget-key] [--forget-key]
      change a service's state out of band (POST /admin/tamper)`)
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func waitCmd(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	_ = fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	for _, url := range fs.Args() {
		for {
			err := get(ctx, url, nil)
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s not ready after %s: %w", url, *timeout, err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// get fetches url and decodes its JSON body into out (when not nil).
func get(ctx context.Context, url string, out any) error {
	return do(ctx, http.MethodGet, url, nil, out)
}

// do sends a request with an optional JSON body and decodes a 200's JSON
// answer into out (when not nil); any other status is an error.
func do(ctx context.Context, method, url string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, strings.TrimSpace(string(data)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

func ledgerCmd(args []string) error {
	fs := flag.NewFlagSet("ledger", flag.ExitOnError)
	raw := fs.Bool("json", false, "print the ledgers as indented JSON")
	urls := map[shop.Kind]*string{}
	for i, k := range shop.Kinds() {
		urls[k] = fs.String(string(k), fmt.Sprintf("http://127.0.0.1:%d", 18081+i), "base URL of the "+string(k)+" service")
	}
	_ = fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var (
		orders       shop.OrdersLedger
		payment      shop.PaymentLedger
		inventory    shop.InventoryLedger
		notification shop.NotificationLedger
	)
	ledgers := map[shop.Kind]any{
		shop.KindOrders: &orders, shop.KindPayment: &payment,
		shop.KindInventory: &inventory, shop.KindNotification: &notification,
	}
	var errs []error
	for _, k := range shop.Kinds() {
		if err := get(ctx, strings.TrimRight(*urls[k], "/")+"/admin/ledger", ledgers[k]); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
			ledgers[k] = nil
		}
	}
	if *raw {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		out := map[string]any{}
		for k, l := range ledgers {
			out[string(k)] = l
		}
		if err := enc.Encode(out); err != nil {
			return err
		}
		return errors.Join(errs...)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	if ledgers[shop.KindOrders] != nil {
		printOrders(w, *urls[shop.KindOrders], &orders)
	}
	if ledgers[shop.KindPayment] != nil {
		printPayment(w, *urls[shop.KindPayment], &payment)
	}
	if ledgers[shop.KindInventory] != nil {
		printInventory(w, *urls[shop.KindInventory], &inventory)
	}
	if ledgers[shop.KindNotification] != nil {
		printNotification(w, *urls[shop.KindNotification], &notification)
	}
	return errors.Join(errs...)
}

// amount formats cents as units with two decimals.
func amount(cents int64) string {
	sign := ""
	if cents < 0 {
		sign, cents = "-", -cents
	}
	return fmt.Sprintf("%s%d.%02d", sign, cents/100, cents%100)
}

func money(cents int64, currency string) string { return amount(cents) + " " + currency }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func section(w *tabwriter.Writer, name, url string) {
	_ = w.Flush()
	fmt.Printf("\n%s  (%s/admin/ledger)\n", name, strings.TrimRight(url, "/"))
}

func printOrders(w *tabwriter.Writer, url string, l *shop.OrdersLedger) {
	section(w, "orders", url)
	if len(l.Orders) == 0 {
		fmt.Println("  no orders")
		return
	}
	fmt.Fprintln(w, "  ORDER\tSTATUS\tUSER\tTOTAL\tITEMS\tSAGA")
	for _, o := range l.Orders {
		items := make([]string, 0, len(o.Items))
		for _, it := range o.Items {
			items = append(items, fmt.Sprintf("%s x%d", it.SKU, it.Quantity))
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\n", o.OrderID, o.Status, orDash(o.UserID),
			money(o.TotalCents, o.Currency), strings.Join(items, ", "), orDash(o.SagaID))
	}
	_ = w.Flush()
	fmt.Printf("  by status: %s\n", countsString(l.ByStatus))
}

func printPayment(w *tabwriter.Writer, url string, l *shop.PaymentLedger) {
	section(w, "payment", url)
	if l.LimitCents > 0 {
		fmt.Printf("  limit on a user's outstanding charges: %s per currency\n", amount(l.LimitCents))
	}
	if len(l.Charges) == 0 {
		fmt.Println("  no charges")
	} else {
		fmt.Fprintln(w, "  PAYMENT\tSTATUS\tUSER\tAMOUNT\tORDER\tREFUND\tSAGA")
		for _, c := range l.Charges {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.PaymentID, c.Status, c.UserID,
				money(c.AmountCents, c.Currency), orDash(c.OrderID), orDash(c.RefundID), orDash(c.SagaID))
		}
		_ = w.Flush()
	}
	for _, cur := range sortedKeys(l.Totals) {
		t := l.Totals[cur]
		fmt.Printf("  %s: %d charge(s), charged %s = refunded %s + voided %s + outstanding %s\n", cur, t.Charges,
			money(t.ChargedCents, cur), money(t.RefundedCents, cur), money(t.VoidedCents, cur), money(t.OutstandingCents, cur))
	}
}

func printInventory(w *tabwriter.Writer, url string, l *shop.InventoryLedger) {
	section(w, "inventory", url)
	fmt.Fprintln(w, "  SKU\tAVAILABLE\tRESERVED\tTOTAL")
	for _, sku := range sortedKeys(l.Stock) {
		s := l.Stock[sku]
		fmt.Fprintf(w, "  %s\t%d\t%d\t%d\n", sku, s.Available, s.Reserved, s.Available+s.Reserved)
	}
	_ = w.Flush()
	if len(l.Reservations) == 0 {
		fmt.Println("  no reservations")
		return
	}
	fmt.Fprintln(w, "  RESERVATION\tSTATUS\tITEMS\tORDER\tSAGA")
	for _, r := range l.Reservations {
		items := make([]string, 0, len(r.Items))
		for _, it := range r.Items {
			items = append(items, fmt.Sprintf("%s x%d", it.SKU, it.Quantity))
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", r.ReservationID, r.Status, strings.Join(items, ", "), orDash(r.OrderID), orDash(r.SagaID))
	}
	_ = w.Flush()
}

func printNotification(w *tabwriter.Writer, url string, l *shop.NotificationLedger) {
	section(w, "notification", url)
	if len(l.Pending)+len(l.Delivered) == 0 {
		fmt.Println("  no messages")
		return
	}
	fmt.Fprintln(w, "  MESSAGE\tKIND\tTO\tSTATE\tSUBJECT\tSAGA")
	for _, m := range l.Delivered {
		fmt.Fprintf(w, "  %s\t%s\t%s\tdelivered\t%s\t%s\n", m.MessageID, m.Kind, m.To, m.Subject, orDash(m.SagaID))
	}
	for _, m := range l.Pending {
		state := fmt.Sprintf("pending (%d attempts)", m.Attempts)
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\n", m.MessageID, m.Kind, m.To, state, m.Subject, orDash(m.SagaID))
	}
	_ = w.Flush()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func countsString(m map[string]int) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
