package saga

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"testing"
	"time"

	"pgregory.net/rapid"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// TestPropertyRandomRuns drives random sagas (1..8 steps, random pivots,
// policies, deadline) through random answers, crashes, suspends, cancels,
// deletions, missing participants and re-drives for a while, then lets
// every call succeed, and checks that:
//   - every decision is idempotent and the status stays under 16 KiB
//     (checkDecision);
//   - a step is never compensated unless it was called forward, and no
//     step is called forward once compensation has begun;
//   - compensating calls go in strict reverse step order (the reverse of
//     the forward completion order) and never happen after a pivot succeeded;
//   - a Skipped step was never called;
//   - a crash after a call re-sends the same call;
//   - once answers stop failing, the saga ends Succeeded (every step
//     Succeeded) or Compensated (every step Compensated, Failed after a
//     rejection, or Skipped without a call) within a bounded number of
//     decisions, re-driving it when it had failed.
//
// The status goes through JSON between decisions, as it does through the
// API server (times lose their sub-second part).
func TestPropertyRandomRuns(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(1, 8).Draw(rt, "steps")
		var steps []sagav1.Step
		for i := range n {
			name := fmt.Sprintf("step-%d", i)
			if rapid.IntRange(0, 3).Draw(rt, "pivot") == 0 {
				steps = append(steps, pivot(name))
			} else {
				steps = append(steps, comp(name))
			}
		}
		spec := newSpec(steps...)
		if rapid.Bool().Draw(rt, "hasDeadline") {
			spec.Deadline = dur(time.Duration(rapid.IntRange(1, 300).Draw(rt, "deadline")) * time.Second)
		}
		pols := map[string]StepPolicies{}
		missing := map[string]bool{}
		for _, s := range steps {
			p := DefaultPolicies()
			p.Forward.MaxAttempts = int32(rapid.IntRange(0, 4).Draw(rt, "fwdAttempts"))
			p.Forward.MaxDuration = time.Duration(rapid.IntRange(0, 60).Draw(rt, "fwdDuration")) * time.Second
			p.Compensate.MaxAttempts = int32(rapid.IntRange(0, 3).Draw(rt, "compAttempts"))
			pols[s.Name] = p
			missing[s.Name] = rapid.IntRange(0, 5).Draw(rt, "missing") == 0
		}
		isPivot := map[string]bool{}
		index := map[string]int{}
		for i, s := range steps {
			isPivot[s.Name] = s.Compensation == ""
			index[s.Name] = i
		}

		chaos := rapid.IntRange(0, 80).Draw(rt, "chaos")
		now := t0.Add(time.Duration(rapid.IntRange(0, 999).Draw(rt, "ms")) * time.Millisecond)
		var (
			st            *sagav1.OrderSagaStatus
			result        *Result
			deleting      bool
			retry         string
			crashed       *Call
			called        = map[string]bool{}
			forwardCalled = map[string]bool{}
			rejected      = map[string]bool{}
			compFirst     = map[string]bool{}
			lastComp      = -1
			pivotOK       bool
			redrives      int
		)
		const settle = 400
		for iter := 0; ; iter++ {
			if iter > chaos+settle {
				rt.Fatalf("no terminal phase after %d decisions (phase %s)", iter, st.Phase)
			}
			chaotic := iter < chaos
			if chaotic && crashed == nil {
				switch rapid.IntRange(0, 39).Draw(rt, "event") {
				case 0, 1:
					spec.Suspend = !spec.Suspend
				case 2:
					spec.Cancel = true
				case 3:
					deleting = true
				case 4, 5, 6, 7:
					now = now.Add(time.Duration(rapid.IntRange(1, 90).Draw(rt, "skip")) * time.Second)
				}
			}
			if !chaotic {
				spec.Suspend = false
				clear(missing)
			}
			active := maps.Clone(pols)
			for name, m := range missing {
				if m {
					delete(active, name)
				}
			}
			jitter := rapid.Float64Range(0, 1).Draw(rt, "jitter")
			in := Input{
				Spec: spec, Status: st, Generation: 1, Now: now, Policies: active,
				Deleting: deleting, RetryRequested: retry, Result: result,
				Jitter: func() float64 { return jitter },
			}
			d := Decide(in)
			checkDecision(rt, in, d)
			result = nil

			for _, s := range d.Status.Steps {
				if s.Phase == sagav1.StepSkipped && called[s.Name] {
					rt.Fatalf("step %s is Skipped but was called", s.Name)
				}
			}
			if crashed != nil {
				resumed := d.Action.Kind == ActionCall && reflect.DeepEqual(*d.Action.Call, *crashed)
				// Times stored with second precision may bring the deadline
				// forward by under a second; that is the only other outcome.
				turned := d.Status.CompensationReason == sagav1.ReasonDeadlineExceeded
				if !resumed && !turned {
					rt.Fatalf("after a crash: %s %+v, want the same call %+v", d.Action.Kind, d.Action.Call, *crashed)
				}
				crashed = nil
			}

			switch d.Action.Kind {
			case ActionCall:
				c := *d.Action.Call
				called[c.Step] = true
				if c.Direction == sagav1.Forward {
					if len(compFirst) > 0 {
						rt.Fatalf("forward call of %s after compensation began", c.Step)
					}
					forwardCalled[c.Step] = true
				} else {
					if !forwardCalled[c.Step] {
						rt.Fatalf("compensating %s, which never started", c.Step)
					}
					if pivotOK {
						rt.Fatalf("compensating %s after a pivot succeeded", c.Step)
					}
					if isPivot[c.Step] {
						rt.Fatalf("compensating pivot %s", c.Step)
					}
					if !compFirst[c.Step] {
						compFirst[c.Step] = true
						if lastComp >= 0 && index[c.Step] >= lastComp {
							rt.Fatalf("compensation order: %s after step %d", c.Step, lastComp)
						}
						lastComp = index[c.Step]
					}
				}
				if chaotic && rapid.IntRange(0, 9).Draw(rt, "crash") == 0 {
					crashed = &c
					break
				}
				o := OutcomeOK
				if chaotic {
					o = rapid.SampledFrom([]Outcome{OutcomeOK, OutcomeAccepted, OutcomeRejected, OutcomeTransient, OutcomeInvalidOutputs}).Draw(rt, "outcome")
				}
				r := &Result{Step: c.Step, Direction: c.Direction, Outcome: o}
				switch o {
				case OutcomeOK:
					if c.Direction == sagav1.Forward {
						r.Outputs = map[string]string{"id": c.Step}
						if isPivot[c.Step] {
							pivotOK = true
						}
					}
				case OutcomeRejected:
					r.Error = &sagav1.StepError{Code: "rejected", HTTPStatus: 409}
					if c.Direction == sagav1.Forward {
						rejected[c.Step] = true
					}
				case OutcomeTransient, OutcomeAccepted:
					r.RetryAfter = time.Duration(rapid.IntRange(0, 5).Draw(rt, "retryAfter")) * time.Second
				}
				result = r
				now = now.Add(time.Duration(rapid.IntRange(0, 1500).Draw(rt, "latency")) * time.Millisecond)

			case ActionWait:
				if !d.Action.Until.After(now) {
					rt.Fatalf("wait until %v, now %v", d.Action.Until, now)
				}
				now = d.Action.Until.Add(time.Duration(rapid.IntRange(0, 300).Draw(rt, "late")) * time.Millisecond)

			case ActionSuspended:
				if !spec.Suspend {
					rt.Fatalf("suspended without spec.suspend")
				}
				if rapid.Bool().Draw(rt, "resume") {
					spec.Suspend = false
				}

			case ActionBlocked:
				if _, ok := active[d.Action.Call.Step]; ok {
					rt.Fatalf("blocked on %s, which has a policy", d.Action.Call.Step)
				}
				if rapid.Bool().Draw(rt, "appear") {
					missing[d.Action.Call.Step] = false
				}

			case ActionDone:
				if !d.Status.Phase.Terminal() {
					rt.Fatalf("done in phase %s", d.Status.Phase)
				}
				if d.Status.Phase == sagav1.SagaFailed && (!chaotic || rapid.Bool().Draw(rt, "redrive")) {
					redrives++
					if redrives > 20 {
						rt.Fatalf("still Failed after %d re-drives", redrives)
					}
					retry = fmt.Sprintf("redrive-%d", iter)
					break
				}
				if chaotic {
					break // keep deciding: nothing may change
				}
				checkFinal(rt, d.Status, forwardCalled, rejected, called)
				return
			}
			st = roundTrip(rt, d.Status)
		}
	})
}

func checkFinal(rt *rapid.T, st *sagav1.OrderSagaStatus, forwardCalled, rejected, called map[string]bool) {
	switch st.Phase {
	case sagav1.SagaSucceeded:
		for _, s := range st.Steps {
			if s.Phase != sagav1.StepSucceeded {
				rt.Fatalf("Succeeded saga with step %s %s", s.Name, s.Phase)
			}
		}
	case sagav1.SagaCompensated:
		for _, s := range st.Steps {
			switch s.Phase {
			case sagav1.StepCompensated:
				if !forwardCalled[s.Name] {
					rt.Fatalf("step %s compensated without a forward call", s.Name)
				}
			case sagav1.StepFailed:
				if !rejected[s.Name] {
					rt.Fatalf("step %s Failed without a rejection", s.Name)
				}
			case sagav1.StepSkipped:
				if called[s.Name] {
					rt.Fatalf("step %s Skipped after a call", s.Name)
				}
			default:
				rt.Fatalf("Compensated saga with step %s %s", s.Name, s.Phase)
			}
		}
	default:
		rt.Fatalf("ended %s once answers stopped failing", st.Phase)
	}
	if st.CurrentStep != "" || st.Attempts != 0 || st.CompletionTime == nil {
		rt.Fatalf("terminal status: currentStep %q attempts %d completionTime %v", st.CurrentStep, st.Attempts, st.CompletionTime)
	}
}

func roundTrip(rt *rapid.T, st *sagav1.OrderSagaStatus) *sagav1.OrderSagaStatus {
	b, err := json.Marshal(st)
	if err != nil {
		rt.Fatalf("marshal: %v", err)
	}
	var out sagav1.OrderSagaStatus
	if err := json.Unmarshal(b, &out); err != nil {
		rt.Fatalf("unmarshal: %v", err)
	}
	return &out
}
