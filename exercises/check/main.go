//go:build unix

// Command check tells a student whether an exercise is solved: it replays the exercise's scenario
// against the step in the working tree and compares the transcript with the expected one.
//
//	go run ./exercises/check 02a
package main

import (
	"fmt"
	"os"

	"muxlab/exercises"
	"muxlab/tracing/replay"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run ./exercises/check NN[x]   (e.g. 02a; run it from the repository's root)")
		os.Exit(2)
	}
	ex, err := exercises.Find(".", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	_, diff, err := ex.Run(".", "./"+ex.Step)
	replay.Cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if diff != "" {
		fmt.Printf("%s: not yet. What ./%s did differs from %s/expected.trace (-expected +yours):\n%s", ex.Name, ex.Step, ex.Dir, diff)
		os.Exit(1)
	}
	fmt.Printf("%s: solved. ./%s produces the expected transcript.\n", ex.Name, ex.Step)
}
