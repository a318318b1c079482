//go:build unix

package exercises

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

// Every exercise is solvable (its reference solution, applied to a copy of the step, produces the
// expected transcript) and not already solved (the shipped step does not). With -update, the expected
// transcript is regenerated from the solution.
func TestExercisesAreSolvableAndUnsolved(t *testing.T) {
	all, err := List("..")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 {
		t.Fatal("no exercises found")
	}
	// The shipped steps fail the checks; a long transcript of theirs is kept where the test cleans up.
	keepDir := replay.KeepDir
	replay.KeepDir = t.TempDir()
	t.Cleanup(func() { replay.KeepDir = keepDir })
	for _, ex := range all {
		t.Run(ex.Name, func(t *testing.T) {
			// The copy lives in testdata/ inside the module, so that it builds against muxlab/tracing,
			// and go's ./... patterns skip it.
			work, err := os.MkdirTemp("testdata", "work-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(work) })
			if err := CopyDir(filepath.Join("..", ex.Step), filepath.Join(work, ex.Step)); err != nil {
				t.Fatal(err)
			}
			if err := ApplyPatch(work, filepath.Join(ex.Name, "solution", "solution.patch")); err != nil {
				t.Fatalf("the solution does not apply to %s: %v", ex.Step, err)
			}
			solved, diff, err := ex.Run("..", "./exercises/"+filepath.ToSlash(filepath.Join(work, ex.Step)))
			if err != nil {
				t.Fatal(err)
			}
			if *tracetest.Update {
				if err := os.WriteFile(filepath.Join(ex.Name, "expected.trace"), []byte(tracing.ByLoop(solved)), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if diff != "" {
				t.Fatalf("the reference solution does not solve %s:\n%s", ex.Name, diff)
			}
			if _, diff, err := ex.Run("..", "./"+ex.Step); err != nil {
				t.Fatal(err)
			} else if diff == "" {
				t.Fatalf("the shipped %s already solves %s: the exercise asks for nothing", ex.Step, ex.Name)
			}
		})
	}
}

// A student's server that dies during the check is reported with its exit status and the last lines of
// its stderr, not only as a connection the client saw close (issue 21: "select: bad file descriptor"
// was hidden behind "the server closed the connection").
func TestCheckShowsHowACrashedServerExited(t *testing.T) {
	ex, err := Find("..", "02a")
	if err != nil {
		t.Fatal(err)
	}
	// A throwaway step inside the module (so that it builds), which go's ./... patterns skip.
	work, err := os.MkdirTemp("testdata", "work-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	step := filepath.Join(work, ex.Step)
	if err := os.MkdirAll(step, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(step, "main.go"), []byte(crashingStep), 0o644); err != nil {
		t.Fatal(err)
	}
	_, diff, err := ex.Run("..", "./exercises/"+filepath.ToSlash(step))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("what the checker prints after \"not yet\":\n%s", diff)
	for _, want := range []string{
		"the server exited (exit status 1); its stderr ended with:\n" +
			"    step02-select-echo: debug 4\n    step02-select-echo: debug 5\n    step02-select-echo: debug 6\n" +
			"    step02-select-echo: debug 7\n    step02-select-echo: select: bad file descriptor\n",
		"--- expected.trace\n+++ yours\n",
		"\n-close      c1 (bye)\n", // whole lines: what the answer does and this server did not
		"\n+!! ",                   // where it stopped
	} {
		if !strings.Contains(diff, want) {
			t.Errorf("the check does not say\n%s", want)
		}
	}
	if strings.Contains(diff, "debug 3") {
		t.Errorf("the check shows more than the last 5 lines of stderr")
	}
}

// crashingStep is a step02 that dies the way the student's did, once c1 has sent something.
const crashingStep = `package main

import (
	"flag"
	"fmt"
	"net"
	"os"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "where to listen")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "step02-select-echo: listening on %s\n", ln.Addr())
	fmt.Println("listen     listener")
	c1, _ := ln.Accept()
	fmt.Println("accept     c1")
	ln.Accept()
	fmt.Println("accept     c2")
	buf := make([]byte, 64)
	n, _ := c1.Read(buf)
	fmt.Printf("read       c1 %d bytes %q\n", n, buf[:n])
	for i := 1; i <= 7; i++ {
		fmt.Fprintf(os.Stderr, "step02-select-echo: debug %d\n", i)
	}
	fmt.Fprintln(os.Stderr, "step02-select-echo: select: bad file descriptor")
	os.Exit(1)
}
`
