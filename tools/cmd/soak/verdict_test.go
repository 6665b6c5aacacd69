package main

import (
	"errors"
	"testing"
)

func TestAssess(t *testing.T) {
	t.Parallel()
	c := criterion{Ratio: 0.2, Slack: 8, FloorRatio: 0.05, FloorSlack: 2}
	ramp := func(from, step float64, n int) []float64 {
		vs := make([]float64, n)
		for i := range vs {
			vs[i] = from + step*float64(i)
		}
		return vs
	}
	for _, tc := range []struct {
		name  string
		vs    []float64
		grows bool
	}{
		{"flat", []float64{30, 30, 30, 30, 30, 30, 30, 30, 30}, false},
		{"noisy but level", []float64{30, 34, 29, 31, 35, 28, 33, 30, 29, 32, 31, 30}, false},
		{"up then down", []float64{30, 31, 30, 40, 42, 41, 31, 30, 29}, false},
		{"one spike per third", []float64{30, 90, 30, 30, 90, 30, 30, 90, 30}, false},
		{"rises within the tolerance, then holds", []float64{30, 31, 32, 33, 33, 33, 33, 33, 33}, false},
		{"clear rise", ramp(30, 3, 12), true},
		{"slow steady climb", ramp(100, 0.6, 30), true},
		{"climb below the noise floor", ramp(100, 0.1, 30), false},
		{"jump in the last third", []float64{30, 30, 30, 30, 30, 30, 50, 50, 50}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr, err := assess(tc.vs, c)
			if err != nil {
				t.Fatal(err)
			}
			if tr.Grows != tc.grows {
				t.Fatalf("grows = %v (%+v), want %v", tr.Grows, tr, tc.grows)
			}
		})
	}
	if _, err := assess([]float64{1, 2, 3}, c); !errors.Is(err, errTooFewSamples) {
		t.Fatalf("three samples: %v", err)
	}
}
