//go:build linux

package main

import (
	"fmt"
	"slices"
)

// A sample is one figure measured once per repetition.
type sample []float64

func (s sample) median() float64 {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

// show formats the median, and the range over the repetitions when there are several: "12.3 [11.9–13.0]".
func (s sample) show(format string) string {
	if len(s) == 0 {
		return "–"
	}
	m := fmt.Sprintf(format, s.median())
	if len(s) == 1 {
		return m
	}
	return fmt.Sprintf("%s [%s–%s]", m, fmt.Sprintf(format, slices.Min(s)), fmt.Sprintf(format, slices.Max(s)))
}
