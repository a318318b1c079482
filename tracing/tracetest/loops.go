//go:build unix

package tracetest

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"muxlab/tracing"
)

// A server with several loops (step09) writes one trace, each line prefixed with its loop (L0, L1,
// ...). The loops run at once, so how their lines interleave changes from run to run; what each loop
// did, in order, in reply to each action of the clients, does not. Its goldens are compared that way.

// loopPrefix matches a line of one loop, and names the loop.
var loopPrefix = regexp.MustCompile(`^(L[0-9]+) `)

// PerLoop splits a transcript into the server's reactions to the clients' actions (a new one at each
// ">>" line, kept under the key ">>") and, within each reaction, each loop's lines in order, under
// the loop's name, leaving out the lines that match leave and the "<<" lines (the scenario's expects
// have checked those).
func PerLoop(transcript string, leave ...*regexp.Regexp) []map[string][]string {
	var out []map[string][]string
	for _, l := range tracing.Lines(Without(transcript, append(leave, Received)...)) {
		if len(out) == 0 || strings.HasPrefix(l, ">> ") {
			out = append(out, map[string][]string{})
		}
		key := ">>"
		if m := loopPrefix.FindStringSubmatch(l); m != nil {
			key = m[1]
		}
		out[len(out)-1][key] = append(out[len(out)-1][key], l)
	}
	return out
}

// ComparePerLoop checks got against the golden file by PerLoop: the same reactions, each loop's lines
// the same and in the same order. With -update it stores got, one interleaving of many.
func ComparePerLoop(t *testing.T, golden, got string, leave ...*regexp.Regexp) {
	t.Helper()
	if *Update {
		Compare(t, golden, got)
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if d := cmp.Diff(PerLoop(string(want), leave...), PerLoop(got, leave...)); d != "" {
		t.Errorf("transcript differs from %s, loop by loop and reaction by reaction (-want +got):\n%s", golden, d)
	}
}
