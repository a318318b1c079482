// Command tracediff compares two traces (or transcripts) line by line and prints what differs as a
// unified diff (diff -u): lines with "-" are only in the first, "+" only in the second, with 3 lines of
// context. It exits 0 when they are equal, 1 when not.
//
//	go run ./tracing/cmd/tracediff step02-select-echo/testdata/seed.trace step03-write-queues/testdata/seed.trace
package main

import (
	"fmt"
	"os"

	"muxlab/tracing"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: tracediff WANT GOT")
		os.Exit(2)
	}
	want, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "tracediff: %v\n", err)
		os.Exit(2)
	}
	got, err := os.ReadFile(os.Args[2])
	if err != nil {
		fmt.Fprintf(os.Stderr, "tracediff: %v\n", err)
		os.Exit(2)
	}
	d := tracing.UnifiedDiff(os.Args[1], os.Args[2], string(want), string(got))
	if d == "" {
		fmt.Printf("%s and %s are the same\n", os.Args[1], os.Args[2])
		return
	}
	fmt.Print(d)
	os.Exit(1)
}
