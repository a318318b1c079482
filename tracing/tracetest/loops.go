//go:build unix

package tracetest

import (
	"os"
	"regexp"
	"testing"

	"muxlab/tracing"
)

// ComparePerLoop checks the transcript of a server with several loops (step09) against a golden one:
// loop by loop, in each stretch of server lines between the clients' lines (see tracing.ByLoop), and
// leaving out the lines that match leave and the "<<" lines (the scenario's expects have checked
// them). The loops run at once, so how their lines interleave changes from run to run; what each loop
// did, in order, for each action of the clients, does not. With -update it stores got in that order,
// so that a golden file changes only when what a loop did changes.
func ComparePerLoop(t *testing.T, golden, got string, leave ...*regexp.Regexp) {
	t.Helper()
	if *Update {
		Compare(t, golden, tracing.ByLoop(got))
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	leave = append(leave, Received)
	if d := tracing.Diff(tracing.ByLoop(Without(string(want), leave...)), tracing.ByLoop(Without(got, leave...))); d != "" {
		t.Errorf("transcript differs from %s, loop by loop, leaving out lines that match %v (-want +got):\n%s", golden, leave, d)
	}
}
