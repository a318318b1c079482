//go:build unix

package tracetest

// Comparing two steps' transcripts, as the lessons do: which lines changed, and only those.

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"muxlab/tracing"
)

// Received matches the transcript lines that say what a client received (see tracing.Received).
var Received = tracing.Received

// Without returns the transcript's lines that match none of the patterns.
func Without(transcript string, patterns ...*regexp.Regexp) string {
	return tracing.Without(transcript, patterns...)
}

// CompareServerLines compares a transcript with a golden one as Compare does, but leaves out the
// clients' "<<" lines (the scenario's expects have checked them already): the server's lines and
// the clients' actions must be the same, in the same order.
func CompareServerLines(t *testing.T, golden, got string) {
	t.Helper()
	CompareWithout(t, golden, got, Received)
}

// CompareWithout compares a transcript with a golden one as Compare does, leaving out the lines that
// match any of the patterns: lines whose number or content depends on TCP timing no scenario controls.
// With -update it stores the whole transcript.
func CompareWithout(t *testing.T, golden, got string, leave ...*regexp.Regexp) {
	t.Helper()
	if *Update {
		Compare(t, golden, got)
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if d := tracing.Diff(Without(string(want), leave...), Without(got, leave...)); d != "" {
		t.Errorf("transcript differs from %s, leaving out lines that match %v (-want +got):\n%s", golden, leave, d)
	}
}

// SlowReaderWrites matches the lines of a turn spent writing to a client that does not read (see
// tracing.SlowReaderWrites).
var SlowReaderWrites = tracing.SlowReaderWrites

// Reactions splits a transcript into the server's reactions to the clients' actions (a new one at
// each ">>" line) and, within each reaction, the lines about each socket, in order, leaving out the
// lines that match leave. Two transcripts with equal reactions did the same things for the same
// actions; only the order in which one reaction took the sockets may differ: select's loops walk
// their clients in order of arrival, epoll returns them in the order they became ready.
func Reactions(transcript string, leave ...*regexp.Regexp) []map[string][]string {
	var out []map[string][]string
	for _, l := range tracing.Lines(Without(transcript, append(leave, Received)...)) {
		f := strings.Fields(l)
		if len(out) == 0 || f[0] == ">>" {
			out = append(out, map[string][]string{})
		}
		if len(f) > 1 {
			out[len(out)-1][f[1]] = append(out[len(out)-1][f[1]], l)
		}
	}
	return out
}

// SameReactions fails the test if the two transcripts' reactions differ.
func SameReactions(t *testing.T, what, a, b string, leaveA, leaveB []*regexp.Regexp) {
	t.Helper()
	if d := cmp.Diff(Reactions(a, leaveA...), Reactions(b, leaveB...)); d != "" {
		t.Errorf("%s (-before +after):\n%s", what, d)
	}
}

// StoreDiff keeps the whole line diff from transcript a to b, leaving out the << lines, in
// testdata/NAME for a lesson to quote, and fails if a changed line matches none of the patterns.
func StoreDiff(t *testing.T, name, a, b string, changes ...*regexp.Regexp) {
	t.Helper()
	script := EditScript(tracing.Lines(Without(a, Received)), tracing.Lines(Without(b, Received)))
	Compare(t, filepath.Join("testdata", name), Render(script))
	for _, e := range script {
		if e.Op != ' ' && !slices.ContainsFunc(changes, func(p *regexp.Regexp) bool { return p.MatchString(e.Line) }) {
			t.Errorf("%s: a line that is not the loop's changed: %c %q", name, e.Op, e.Line)
		}
	}
}
