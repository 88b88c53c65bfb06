package controller

import (
	"fmt"
	"os"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// The throughput benchmark runs only from `make bench` (SAGA_BENCH=1): it
// prints figures and asserts nothing about speed.
var _ = Describe("OrderSaga throughput", Label("bench"), func() {
	It("runs sagas against fast participants and reports sagas per second and writes per saga", func() {
		if os.Getenv("SAGA_BENCH") == "" {
			Skip("benchmark: run with `make bench`")
		}
		n := 1000
		shard := newShard()
		s := newShop(shard, nil)
		mgr := runManager(shard, nil)

		start := time.Now()
		var wg sync.WaitGroup
		names := make(chan int)
		for range 16 {
			wg.Go(func() {
				defer GinkgoRecover()
				for i := range names {
					s.saga(fmt.Sprintf("bench-%04d", i), nil)
				}
			})
		}
		for i := range n {
			names <- i
		}
		close(names)
		wg.Wait()
		created := time.Since(start)
		// Count completions from the manager's own metric, so that watching
		// the benchmark puts no load on the API server it measures.
		succeeded := mgr.saga.Metrics.Completed.WithLabelValues(s.ns, string(sagav1.SagaSucceeded))
		Eventually(func() float64 { return testutil.ToFloat64(succeeded) }).
			WithTimeout(10 * time.Minute).WithPolling(100 * time.Millisecond).Should(Equal(float64(n)))
		elapsed := time.Since(start)
		writes := 0
		for i := range n {
			writes += mgr.writes.Writes(s.ns, fmt.Sprintf("bench-%04d", i))
		}
		report := fmt.Sprintf("%d four-step sagas: created in %s, all Succeeded after %s: %.0f sagas/s, %.2f operator writes per saga",
			n, created.Round(time.Millisecond), elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), float64(writes)/float64(n))
		fmt.Fprintln(GinkgoWriter, report)
		AddReportEntry("throughput", report)
		fmt.Println(report)
	})
})
