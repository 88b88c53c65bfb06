package saga

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	sagav1 "github.com/sagaops/saga-operator/api/v1alpha1"
)

// Bounds that keep the saga log small whatever happens (DESIGN.md: "The
// object stays under 16 KiB whatever the history").
//
// Text limits are measured on the JSON encoding (what is stored), so they
// hold for raw bytes too: a 512-byte limit on a message full of '<' (six
// bytes each once escaped) keeps about 85 of them.
const (
	// MaxHistory is the number of history entries kept (oldest dropped first).
	MaxHistory = 32
	// MaxHistoryMessageBytes bounds a history entry's message.
	MaxHistoryMessageBytes = 256
	// MaxErrorMessageBytes bounds a step's lastError.message.
	MaxErrorMessageBytes = 512
	// MaxErrorCodeBytes bounds a step's lastError.code (the API allows 128;
	// codes are identifiers, 64 is plenty and keeps the log small).
	MaxErrorCodeBytes = 64

	// MaxOutputs, MaxOutputKeyLen and MaxOutputValueLen are the protocol's
	// limits on one step's outputs (PROTOCOL.md); a 200 that breaks them is
	// handled as OutcomeInvalidOutputs.
	MaxOutputs        = 16
	MaxOutputKeyLen   = 63
	MaxOutputValueLen = 256

	// MaxStatusOutputBytes bounds the outputs stored in status across all
	// steps, measured as the JSON encoding of each step's outputs object.
	// The protocol allows 16 x 256 bytes per step and 32 steps (128 KiB),
	// far more than an object should carry; a successful forward call whose
	// outputs would push the total over this budget is handled as
	// OutcomeInvalidOutputs (reason InvalidOutputs).
	MaxStatusOutputBytes = 4 << 10

	// MaxStatusBytes is the target size of the JSON-encoded status. When a
	// decision would exceed it, the oldest history entries are dropped until
	// it fits (the history is the only part that may shrink: steps, outputs
	// and errors are needed to act). The fixed parts are bounded by the
	// limits above, so even with 32 steps of 63-character names, a full
	// outputs budget and errors at their limits the status stays under
	// 16 KiB (see TestWorstCaseStatusSize).
	MaxStatusBytes = 14 << 10

	// maxRetryTokenBytes: a retry annotation value up to this size (that
	// needs no JSON escaping) is stored as is in status.observedRetry; a
	// longer one is stored as its SHA-256.
	maxRetryTokenBytes = 64
)

// jsonCost is the number of bytes r takes in Go's JSON encoding of a string.
func jsonCost(r rune) int {
	switch {
	case r == '"' || r == '\\':
		return 2
	case r == '<' || r == '>' || r == '&' || r == '\u2028' || r == '\u2029':
		return 6
	case r < 0x20:
		return 6
	case r < utf8.RuneSelf:
		return 1
	}
	return utf8.RuneLen(r)
}

// clean makes s valid UTF-8 and replaces control characters with spaces, so
// that messages render on one line and do not blow up when escaped.
func clean(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// Truncate cleans s (valid UTF-8, no control characters) and shortens it so
// that its JSON encoding takes at most max bytes, cutting on a rune boundary
// and ending a shortened text with "…".
func Truncate(s string, max int) string {
	s = clean(s)
	total := 0
	for _, r := range s {
		total += jsonCost(r)
	}
	if total <= max {
		return s
	}
	const ellipsis = "…" // 3 bytes
	budget := max - len(ellipsis)
	if budget < 0 {
		return ""
	}
	cost := 0
	for i, r := range s {
		c := jsonCost(r)
		if cost+c > budget {
			return s[:i] + ellipsis
		}
		cost += c
	}
	return s
}

// boundError returns a copy of e with its texts within the limits; a nil e
// becomes {Code: code}.
func boundError(e *sagav1.StepError, code string) *sagav1.StepError {
	out := &sagav1.StepError{Code: code}
	if e != nil {
		out = e.DeepCopy()
		if out.Code == "" {
			out.Code = code
		}
	}
	out.Code = Truncate(out.Code, MaxErrorCodeBytes)
	out.Message = Truncate(out.Message, MaxErrorMessageBytes)
	return out
}

// outputsSize is the size of the JSON encoding of one step's outputs (0 for none).
func outputsSize(m map[string]string) int {
	if len(m) == 0 {
		return 0
	}
	b, err := json.Marshal(m)
	if err != nil {
		return MaxStatusOutputBytes + 1
	}
	return len(b)
}

// outputsProblem says why outputs cannot be stored, "" if they can. others
// is the size already used by the other steps' outputs.
func outputsProblem(m map[string]string, others int) string {
	if len(m) > MaxOutputs {
		return fmt.Sprintf("%d outputs, more than %d", len(m), MaxOutputs)
	}
	for k, v := range m {
		if len(k) > MaxOutputKeyLen {
			return fmt.Sprintf("an output key is %d bytes long, more than %d", len(k), MaxOutputKeyLen)
		}
		if len(v) > MaxOutputValueLen {
			return fmt.Sprintf("an output value is %d bytes long, more than %d", len(v), MaxOutputValueLen)
		}
	}
	if n := outputsSize(m); others+n > MaxStatusOutputBytes {
		return fmt.Sprintf("outputs of %d bytes would bring the saga's stored outputs to %d bytes, over the budget of %d", n, others+n, MaxStatusOutputBytes)
	}
	return ""
}

// retryToken is what status.observedRetry stores for an annotation value.
func retryToken(v string) string {
	if len(v) <= maxRetryTokenBytes && Truncate(v, maxRetryTokenBytes) == v {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// StatusSize is the size of the JSON encoding of status.
func StatusSize(status *sagav1.OrderSagaStatus) int {
	b, err := json.Marshal(status)
	if err != nil {
		return 0
	}
	return len(b)
}

// compact keeps the last MaxHistory entries and then drops the oldest ones
// while the encoded status is larger than MaxStatusBytes. It is
// deterministic and idempotent: a compacted status is left as it is.
func compact(st *sagav1.OrderSagaStatus) {
	if len(st.History) > MaxHistory {
		st.History = append([]sagav1.HistoryEntry(nil), st.History[len(st.History)-MaxHistory:]...)
	}
	size := StatusSize(st)
	if size <= MaxStatusBytes || len(st.History) == 0 {
		return
	}
	drop := 0
	for drop < len(st.History) && size > MaxStatusBytes {
		b, _ := json.Marshal(st.History[drop])
		size -= len(b) + 1
		drop++
	}
	if drop == len(st.History) {
		st.History = nil
		return
	}
	st.History = append([]sagav1.HistoryEntry(nil), st.History[drop:]...)
}
