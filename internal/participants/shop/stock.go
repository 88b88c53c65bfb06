package shop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ParseStock parses "SKU-1=100,SKU-2=50" (commas or newlines between
// entries, blank lines and #-comments ignored) into SKU to quantity. A SKU
// given twice is an error.
func ParseStock(s string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, line := range strings.Split(s, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		for _, entry := range strings.Split(line, ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			sku, qty, ok := strings.Cut(entry, "=")
			sku, qty = strings.TrimSpace(sku), strings.TrimSpace(qty)
			if !ok || sku == "" {
				return nil, fmt.Errorf("stock entry %q: want SKU=quantity", entry)
			}
			n, err := strconv.ParseInt(qty, 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("stock entry %q: quantity must be a whole number ≥ 0", entry)
			}
			if _, dup := out[sku]; dup {
				return nil, fmt.Errorf("stock entry %q: SKU %s given twice", entry, sku)
			}
			out[sku] = n
		}
	}
	return out, nil
}

// LoadStockFile reads a stock file: a JSON object {"SKU-1": 100, ...} or
// the ParseStock syntax, one entry per line.
func LoadStockFile(path string) (map[string]int64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '{' {
		var m map[string]int64
		if err := json.Unmarshal(t, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for sku, n := range m {
			if sku == "" || n < 0 {
				return nil, fmt.Errorf("%s: invalid entry %q: %d", path, sku, n)
			}
		}
		return m, nil
	}
	m, err := ParseStock(string(raw))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}
