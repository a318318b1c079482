//go:build linux

// Command grade grades a class in one command: every submission in a folder (a clone of the lab, a
// step folder, or a zip of either: one per student) is built once and played every scenario of the
// step that has a golden transcript (or an exercise's check), and the result is a table, student by
// scenario, and a report with each student's line diffs.
//
//	go run ./tracing/cmd/grade -step step03 submissions/
//	go run ./tracing/cmd/grade -exercise 03a -report grades-03a submissions/
//
// It exits 0 when it graded everyone, whatever their results; 1 when it could not grade (or could
// not read a submission); 2 on a bad command line.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"muxlab/tracing/grade"
)

func main() {
	var o grade.Options
	step := flag.String("step", "", "the step to grade (a folder name, or its start: step03)")
	flag.StringVar(&o.Exercise, "exercise", "", "or an exercise to grade, e.g. 03a")
	only := flag.String("only", "", "grade only these scenarios, comma-separated (default: every one with a golden transcript)")
	flag.IntVar(&o.Parallel, "parallel", runtime.NumCPU(), "students graded at once")
	flag.DurationVar(&o.Timeout, "timeout", time.Minute, "time limit of one run (one scenario against one student)")
	flag.DurationVar(&o.Stall, "stall", 0, "bound on each wait of a client for an answer (send, expect, expect-line), if less than the scenario's own (10s)")
	flag.DurationVar(&o.BuildTimeout, "build-timeout", 2*time.Minute, "time limit of one student's build")
	report := flag.String("report", "grade-report", "folder to write the report into (README.md, index.html, the diffs)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: grade (-step STEP | -exercise NNx) [flags] SUBMISSIONS\n\nSUBMISSIONS holds one folder or .zip per student. Run it from the lab's root.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 || (*step == "") == (o.Exercise == "") {
		flag.Usage()
		os.Exit(2)
	}
	root, err := labRoot()
	if err != nil {
		fail(err)
	}
	o.Root = root
	if *step != "" {
		if o.Step, err = stepFolder(root, *step); err != nil {
			fail(err)
		}
	}
	if *only != "" {
		o.Only = strings.Split(*only, ",")
	}
	// Ctrl-C stops the grading: every server and build is killed, every temporary folder removed.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	class, err := grade.Grade(ctx, o, flag.Arg(0))
	if err != nil {
		fail(err)
	}
	fmt.Print(class.Table())
	command := "go run ./tracing/cmd/grade " + strings.Join(os.Args[1:], " ")
	if err := class.WriteReport(*report, command); err != nil {
		fail(err)
	}
	fmt.Printf("\n%d students graded in %v; the report: %s\n", len(class.Students), time.Since(start).Round(time.Second), filepath.Join(*report, "index.html"))
	if class.Unreadable > 0 {
		fmt.Fprintf(os.Stderr, "grade: %d submissions could not be read (see the table)\n", class.Unreadable)
		os.Exit(1)
	}
}

// labRoot is the folder of the muxlab module that holds the working directory.
func labRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if mod, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(mod), "module muxlab\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("not inside the muxlab module: run grade from the lab's root")
		}
		dir = parent
	}
}

// stepFolder finds the one step folder whose name starts with name ("step03", "./step03-write-queues").
func stepFolder(root, name string) (string, error) {
	name = strings.TrimSuffix(filepath.Base(filepath.Clean(name)), "/")
	matches, _ := filepath.Glob(filepath.Join(root, name+"*"))
	if len(matches) != 1 {
		return "", fmt.Errorf("-step %s: want exactly one folder %s* in %s, found %d", name, name, root, len(matches))
	}
	return filepath.Base(matches[0]), nil
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "grade: %v\n", err)
	os.Exit(1)
}
