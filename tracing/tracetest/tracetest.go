//go:build unix

// Package tracetest holds the helpers the steps' tests share: replaying a scenario against the step in
// the current directory and comparing the transcript with a golden file.
//
// Every test package of the lab accepts -update (go test ./... -update), which rewrites golden files
// instead of comparing: a reviewer then reads the diff.
package tracetest

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/scenario"
)

// Update is set by -update: golden files are rewritten instead of compared.
var Update = flag.Bool("update", false, "rewrite golden files under testdata/ instead of comparing with them")

// Main runs a test package's tests and removes the binaries built for them. Use it as
// func TestMain(m *testing.M) { tracetest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	replay.Cleanup()
	os.Exit(code)
}

// Binary builds the step program in pkg (default: the package under test, ".") once per test process.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	bin, err := replay.Build(".", pkg)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Replay plays the scenario file against the step in pkg and fails the test if an expectation fails.
// The failure shows the start and end of the transcript so far, and where the whole of it is kept.
func Replay(t testing.TB, pkg, scenarioFile string, args ...string) *replay.Result {
	t.Helper()
	sc, err := scenario.ParseFile(scenarioFile)
	if err != nil {
		t.Fatal(err)
	}
	res, err := replay.Run(Binary(t, pkg), sc, args...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// Golden replays scenarios/NAME.txt against the step in the current directory and compares the
// transcript with testdata/NAME.trace.
func Golden(t *testing.T, name string, args ...string) *replay.Result {
	t.Helper()
	res := Replay(t, ".", filepath.Join("scenarios", name+".txt"), args...)
	Compare(t, filepath.Join("testdata", name+".trace"), res.Transcript)
	return res
}

// Compare checks got against the golden file (or rewrites it under -update).
func Compare(t testing.TB, golden, got string) {
	t.Helper()
	if *Update {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if d := tracing.Diff(string(want), got); d != "" {
		t.Errorf("transcript differs from %s (-want +got):\n%s\nIf the change is intended, rerun with -update and read the diff.", golden, d)
	}
}

// Open starts the step in pkg for a test that plays it step by step with Do; it is stopped when the
// test ends.
func Open(t testing.TB, pkg string, args ...string) *replay.Session {
	t.Helper()
	s, err := replay.Open(Binary(t, pkg), args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Do plays scenario lines on s and fails the test, with the transcript so far (its start and end, if
// long), if one fails.
func Do(t testing.TB, s *replay.Session, lines string) {
	t.Helper()
	if err := s.Do(lines); err != nil {
		t.Fatal(s.Failure(err))
	}
}
