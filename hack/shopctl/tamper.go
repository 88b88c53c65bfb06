package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sagaops/saga-operator/internal/participants/shop"
)

// tamperCmd changes a service's state out of band (POST /admin/tamper), to
// show the consistency checker at work.
func tamperCmd(args []string) error {
	fs := flag.NewFlagSet("tamper", flag.ExitOnError)
	url := fs.String("url", "", "base URL of the service (e.g. http://127.0.0.1:18083)")
	uid := fs.String("saga-uid", "", "UID of the saga (kubectl get osaga NAME -o jsonpath='{.metadata.uid}')")
	step := fs.String("step", "", "step name")
	op := fs.String("op", shop.OpDrop, "void (payment), drop (any service) or forget-key")
	forget := fs.Bool("forget-key", false, "also forget the forward call's idempotency record (a restore from backup)")
	_ = fs.Parse(args)
	if *url == "" || *uid == "" || *step == "" {
		return fmt.Errorf("tamper needs --url, --saga-uid and --step")
	}
	body, err := json.Marshal(shop.TamperRequest{SagaUID: *uid, Step: *step, Op: *op, ForgetKey: *forget})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r shop.TamperResponse
	if err := do(ctx, http.MethodPost, strings.TrimRight(*url, "/")+"/admin/tamper", body, &r); err != nil {
		return err
	}
	fmt.Printf("step %s of saga %s is now %q (%s)", r.Step, r.SagaUID, r.State, r.Detail)
	if r.ForgottenKey != "" {
		fmt.Printf("; forgot key %s", r.ForgottenKey)
	}
	fmt.Println()
	return nil
}
