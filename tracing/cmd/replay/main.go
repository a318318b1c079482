//go:build unix

// Command replay plays a scenario against a step program and prints the transcript: the server's trace
// with the clients' actions woven in. With -diff it compares the transcript with a golden file instead.
//
//	go run ./tracing/cmd/replay step02-select-echo/scenarios/seed.txt
//	go run ./tracing/cmd/replay -step ./step03-write-queues step02-select-echo/scenarios/seed.txt
//	go run ./tracing/cmd/replay -step ./my-step02 -diff step02-select-echo/testdata/seed.trace step02-select-echo/scenarios/seed.txt
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/scenario"
)

func main() {
	step := flag.String("step", "", "package of the step program to run (default: the folder that holds the scenario's scenarios/ folder)")
	golden := flag.String("diff", "", "compare the transcript with this golden file and print the differences")
	args := flag.String("args", "", "extra server flags, space-separated (e.g. \"-fds\")")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: replay [-step PKG] [-diff GOLDEN] [-args FLAGS] SCENARIO\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	file := flag.Arg(0)
	sc, err := scenario.ParseFile(file)
	if err != nil {
		fail(err)
	}
	pkg := *step
	if pkg == "" {
		pkg = "./" + filepath.Dir(filepath.Dir(filepath.Clean(file)))
	}
	bin, err := replay.Build(".", pkg)
	if err != nil {
		fail(err)
	}
	defer replay.Cleanup()
	res, err := replay.Run(bin, sc, strings.Fields(*args)...)
	if err != nil {
		// A *replay.Failure: the start and end of the transcript so far (a broken server can print
		// millions of lines), where the whole of it is kept, and the server's exit status and last
		// lines of stderr if it exited.
		replay.Cleanup()
		fail(err)
	}
	if *golden == "" {
		fmt.Print(res.Transcript)
		return
	}
	want, err := os.ReadFile(*golden)
	if err != nil {
		replay.Cleanup()
		fail(err)
	}
	if d := tracing.UnifiedDiff(*golden, pkg+" on "+file, string(want), res.Transcript); d != "" {
		fmt.Printf("%s (%s) differs from %s (-want +got):\n%s", pkg, file, *golden, d)
		replay.Cleanup()
		os.Exit(1)
	}
	fmt.Printf("%s (%s) matches %s\n", pkg, file, *golden)
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "replay: %v\n", err)
	os.Exit(1)
}
