package tracing

import (
	"strings"

	"github.com/google/go-cmp/cmp"
)

// Diff compares two traces line by line and returns a readable diff ("-" lines only in want, "+" lines
// only in got), or "" when they are equal. go-cmp's layout is not stable across versions: show it, never
// store it.
func Diff(want, got string) string {
	return cmp.Diff(Lines(want), Lines(got))
}

// Lines splits a trace into lines, without the empty string after a final newline.
func Lines(trace string) []string {
	trace = strings.TrimSuffix(trace, "\n")
	if trace == "" {
		return []string{}
	}
	return strings.Split(trace, "\n")
}
