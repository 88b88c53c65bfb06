// Command participants serves the reference shop services (orders,
// payment, inventory, notification) of the saga operator, each on its own
// address and over its own bbolt file, implementing participant protocol
// v1. See internal/participants/shop for the business rules and the admin
// endpoints.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sagaops/saga-operator/internal/participants/shop"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stderr, nil)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "participants:", err)
		os.Exit(1)
	}
}

type options struct {
	addrs           map[shop.Kind]*string
	dataDir         string
	stock           string
	stockFile       string
	paymentLimit    int64
	transientRate   float64
	latencyMs       int
	lostReplyRate   float64
	faultServices   string
	deliveryRate    float64
	faultSeed       uint64
	webhookURL      string
	authToken       string
	noSync          bool
	shutdownTimeout time.Duration
	logLevel        string
}

func parseFlags(args []string, stderr io.Writer) (*options, map[string]bool, error) {
	o := &options{addrs: map[shop.Kind]*string{}}
	fs := flag.NewFlagSet("participants", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: participants [flags]\n\nServes the reference orders, payment, inventory and notification services\n(participant protocol v1), each on its own address.\n\nFlags:")
		fs.PrintDefaults()
	}
	for i, k := range shop.Kinds() {
		o.addrs[k] = fs.String(string(k)+"-addr", fmt.Sprintf("127.0.0.1:%d", 18081+i), "listen address of the "+string(k)+" service")
	}
	fs.StringVar(&o.dataDir, "data-dir", "./bin/participants-data", "directory of the bbolt files, one per service (<service>.db)")
	fs.StringVar(&o.stock, "stock", "SKU-1=100,SKU-2=50", "inventory seed, SKU=quantity,...; SKUs already stored keep their levels")
	fs.StringVar(&o.stockFile, "stock-file", "", "inventory seed file: a JSON object {\"SKU\": quantity} or SKU=quantity lines; replaces the default --stock, and an explicit --stock overrides its entries")
	fs.Int64Var(&o.paymentLimit, "payment-limit-cents", shop.DefaultPaymentLimitCents, "limit on a user's outstanding charges per currency, in cents (0: none)")
	fs.Float64Var(&o.transientRate, "fault-transient-rate", 0, "fraction of action calls answered 503 without applying anything")
	fs.IntVar(&o.latencyMs, "fault-latency-ms", 0, "added latency of every action call, in milliseconds")
	fs.Float64Var(&o.lostReplyRate, "fault-lost-reply-rate", 0, "fraction of action calls applied and committed whose connection is then dropped")
	fs.StringVar(&o.faultServices, "fault-services", "", "comma-separated services the --fault-* call faults apply to (default: all)")
	fs.Float64Var(&o.deliveryRate, "fault-delivery-rate", 0, "fraction of notification deliveries that fail and are retried")
	fs.Uint64Var(&o.faultSeed, "fault-seed", 1, "seed of the fault injection's random source")
	fs.StringVar(&o.webhookURL, "webhook-url", "", "notification: POST each outbox message to this URL before recording it delivered")
	fs.StringVar(&o.authToken, "auth-token", "", "require Authorization: Bearer <token> on the protocol endpoints (default: no auth)")
	fs.BoolVar(&o.noSync, "no-sync", false, "do not fsync on commit (tests only: answers are no longer durable)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long to wait for in-flight requests on shutdown")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return o, set, nil
}

// serviceOptions turns the flags into the options of each service.
func (o *options) serviceOptions(set map[string]bool, log *slog.Logger) (map[shop.Kind][]shop.Option, error) {
	var stock map[string]int64
	var err error
	if o.stockFile == "" || set["stock"] {
		if stock, err = shop.ParseStock(o.stock); err != nil {
			return nil, fmt.Errorf("--stock: %w", err)
		}
	}
	if o.stockFile != "" {
		fromFile, err := shop.LoadStockFile(o.stockFile)
		if err != nil {
			return nil, fmt.Errorf("--stock-file: %w", err)
		}
		for sku, q := range stock {
			fromFile[sku] = q
		}
		stock = fromFile
	}
	faulty := map[shop.Kind]bool{}
	if strings.TrimSpace(o.faultServices) == "" {
		for _, k := range shop.Kinds() {
			faulty[k] = true
		}
	}
	for _, name := range strings.Split(o.faultServices, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if _, ok := o.addrs[shop.Kind(name)]; !ok {
			return nil, fmt.Errorf("--fault-services: unknown service %q", name)
		}
		faulty[shop.Kind(name)] = true
	}
	fault := shop.Fault{TransientRate: o.transientRate, LatencyMs: o.latencyMs, LostReplyRate: o.lostReplyRate}
	out := map[shop.Kind][]shop.Option{}
	for i, k := range shop.Kinds() {
		opts := []shop.Option{
			shop.WithLogger(log),
			shop.WithNoSync(o.noSync),
			shop.WithSeed(o.faultSeed + uint64(i)),
			shop.WithBearerToken(o.authToken),
		}
		if faulty[k] && fault != (shop.Fault{}) {
			opts = append(opts, shop.WithFault("*", fault))
		}
		switch k {
		case shop.KindPayment:
			opts = append(opts, shop.WithPaymentLimit(o.paymentLimit))
		case shop.KindInventory:
			opts = append(opts, shop.WithStock(stock))
		case shop.KindNotification:
			opts = append(opts, shop.WithDeliveryFaultRate(o.deliveryRate))
			if o.webhookURL != "" {
				opts = append(opts, shop.WithWebhook(o.webhookURL, nil))
			}
		}
		out[k] = opts
	}
	return out, nil
}

// run serves the four services until ctx is done, then shuts them down:
// servers first (in-flight requests finish), then the dispatcher, then the
// databases. ready, when not nil, receives each service's listen address.
func run(ctx context.Context, args []string, stderr io.Writer, ready func(map[shop.Kind]string)) (err error) {
	o, set, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	perService, err := o.serviceOptions(set, log)
	if err != nil {
		return err
	}

	type running struct {
		svc *shop.Service
		ln  net.Listener
		srv *http.Server
	}
	var all []*running
	defer func() {
		for _, r := range all {
			if r.ln != nil {
				_ = r.ln.Close()
			}
			if cerr := r.svc.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close %s: %w", r.svc.Kind(), cerr)
			}
		}
		if len(all) > 0 {
			log.Info("stopped", "err", err)
		}
	}()
	for _, k := range shop.Kinds() {
		svc, err := shop.Open(k, filepath.Join(o.dataDir, string(k)+".db"), perService[k]...)
		if err != nil {
			return err
		}
		all = append(all, &running{svc: svc})
	}
	addrs := map[shop.Kind]string{}
	for _, r := range all {
		k := r.svc.Kind()
		if r.ln, err = net.Listen("tcp", *o.addrs[k]); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		addrs[k] = r.ln.Addr().String()
		r.srv = &http.Server{
			Handler:           r.svc,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
	}

	for _, r := range all {
		if err := r.svc.Start(ctx); err != nil {
			return err
		}
	}
	serveErr := make(chan error, len(all))
	for _, r := range all {
		ln := r.ln
		r.ln = nil // owned by the server from now on
		go func() {
			if err := r.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("%s: %w", r.svc.Kind(), err)
			}
		}()
		log.Info("serving", "service", string(r.svc.Kind()), "addr", addrs[r.svc.Kind()],
			"db", r.svc.Path(), "actions", r.svc.Actions())
	}
	if ready != nil {
		ready(addrs)
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-serveErr:
		log.Error("server failed, shutting down", "err", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	for _, r := range all {
		if serr := r.srv.Shutdown(sctx); serr != nil {
			log.Warn("shutdown", "service", string(r.svc.Kind()), "err", serr)
			_ = r.srv.Close()
		}
	}
	for _, r := range all {
		r.svc.Stop()
	}
	return err // the deferred function closes the databases
}
