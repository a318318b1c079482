//go:build unix

package tracetest

import (
	"os"
	"path/filepath"
	"testing"

	"muxlab/tracing"
)

// CodeDiff keeps the lesson's code diff, from the parent step's main.go to this step's, in
// testdata/NAME (go test -update rewrites it), so that a lesson cannot quote a stale diff. parent
// and step are the steps' folders (step05-epoll, step07-timers); the test runs in step's. It returns
// the edit script, for a test that also counts the changed lines.
func CodeDiff(t testing.TB, parent, step, name string) []Edit {
	t.Helper()
	old, err := os.ReadFile(filepath.Join("..", parent, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	script := EditScript(tracing.Lines(string(old)), tracing.Lines(string(cur)))
	Compare(t, filepath.Join("testdata", name), Unified(parent+"/main.go", step+"/main.go", script, 3))
	return script
}
