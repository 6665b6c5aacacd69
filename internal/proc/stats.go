package proc

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// StatusKB reads a "Key:   123 kB" line of /proc/<pid>/status, such as
// VmRSS or VmHWM, in kB.
func StatusKB(pid int, key string) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != key {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) == 0 {
			break
		}
		return strconv.ParseInt(fs[0], 10, 64)
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, key)
}

// Scrape fetches url, a Prometheus endpoint, in the classic text format and
// returns the values of the series named in want (see ParseSeries).
func Scrape(ctx context.Context, client *http.Client, url string, want ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain") // the classic text format, not OpenMetrics
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return ParseSeries(resp.Body, want...)
}

// ParseSeries reads a Prometheus text exposition and returns the values of
// the series named in want, each written exactly as it appears there: a
// bare name such as go_goroutines, or a name with its labels sorted by name,
// such as ensure_user_outcomes_total{outcome="busy"}. A series that is
// absent is absent from the map.
func ParseSeries(r io.Reader, want ...string) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, w := range want {
			rest, ok := strings.CutPrefix(line, w+" ")
			if !ok {
				continue
			}
			v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			if err != nil {
				return nil, fmt.Errorf("metric %s: %w", w, err)
			}
			out[w] = v
		}
	}
	return out, sc.Err()
}
