package testenv

import (
	"bufio"
	"io"
	"strconv"
	"strings"
	"testing"
)

// ScrapeValue returns the value of one series in a Prometheus text
// exposition, written exactly as it appears there (labels sorted by name,
// e.g. `ensure_user_outcomes_total{outcome="busy"}`); 0 when absent.
func ScrapeValue(t testing.TB, r io.Reader, series string) float64 {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read metrics: %v", err)
	}
	return 0
}
