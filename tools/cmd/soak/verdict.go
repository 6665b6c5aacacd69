package main

import (
	"errors"
	"fmt"
	"slices"
)

// criterion decides whether a sampled quantity keeps growing. The samples
// taken after the warm-up are cut into thirds, and the medians of the thirds
// are compared (medians, so that a sample taken in a burst or during a Redis
// outage does not decide). The quantity keeps growing when either
//
//   - the last third's median exceeds the first third's by more than
//     Ratio of it plus Slack (a clear rise), or
//   - the three medians rise strictly, first < middle < last, and the last
//     exceeds the first by more than FloorRatio of it plus FloorSlack (a
//     steady climb, too slow for the first test within the run but still a
//     leak).
//
// A quantity that rises during the warm-up and then holds, or that goes up
// and down, passes.
type criterion struct {
	Ratio, Slack           float64
	FloorRatio, FloorSlack float64
}

// minSamples is the fewest post-warm-up samples assess accepts: three per third.
const minSamples = 9

// trend is what assess found.
type trend struct {
	First, Middle, Last float64 // medians of the thirds
	Limit               float64 // the last third's median may not exceed this
	Grows               bool
	Why                 string // when Grows
}

// errTooFewSamples means the run was too short for a verdict.
var errTooFewSamples = errors.New("too few samples after the warm-up for a verdict")

// assess applies c to the post-warm-up samples vs.
func assess(vs []float64, c criterion) (trend, error) {
	if len(vs) < minSamples {
		return trend{}, fmt.Errorf("%w: %d, want at least %d", errTooFewSamples, len(vs), minSamples)
	}
	k := len(vs) / 3
	tr := trend{
		First:  median(vs[:k]),
		Middle: median(vs[k : len(vs)-k]),
		Last:   median(vs[len(vs)-k:]),
	}
	tr.Limit = tr.First*(1+c.Ratio) + c.Slack
	floor := tr.First*c.FloorRatio + c.FloorSlack
	switch {
	case tr.Last > tr.Limit:
		tr.Grows, tr.Why = true, fmt.Sprintf("last third's median %.1f is above %.1f", tr.Last, tr.Limit)
	case tr.First < tr.Middle && tr.Middle < tr.Last && tr.Last-tr.First > floor:
		tr.Grows, tr.Why = true, fmt.Sprintf("rises steadily: %.1f, %.1f, %.1f (by more than %.1f)", tr.First, tr.Middle, tr.Last, floor)
	}
	return tr, nil
}

// median returns the median of vs, which must not be empty.
func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
