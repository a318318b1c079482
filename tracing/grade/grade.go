//go:build linux

package grade

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"muxlab/exercises"
	"muxlab/tracing"
	"muxlab/tracing/replay"
)

// Options says what to grade and how.
type Options struct {
	Root     string   // the lab's root: its scenarios and golden transcripts are the reference
	Step     string   // the step folder, e.g. "step03-write-queues"; or:
	Exercise string   // an exercise, e.g. "03a": its check.txt, compared with its expected.trace
	Only     []string // if set, only the scenarios with these names

	Parallel     int           // students graded at once (0: the number of CPUs)
	Timeout      time.Duration // bound on one run; past it the server is killed: "hung after N s"
	Stall        time.Duration // bound on each wait for an answer (send, expect, expect-line); 0 keeps the scenario's
	BuildTimeout time.Duration // bound on one go build
}

// Class is a graded class.
type Class struct {
	Step       string     // the step folder graded
	Checks     []string   // the table's columns: the scenarios (or the exercise) graded
	Ungraded   []string   // the step's scenarios without a golden transcript, not graded
	Students   []*Student // by name
	Unreadable int        // students whose submission could not be read
}

// Student is one student's results.
type Student struct {
	Name    string
	Took    string    // how the grader took the submission: "clone", "step folder", "zip: ..."
	Wrong   string    // why the submission could not be graded at all ("" if it could)
	Build   string    // go build's output, cut, when it did not build
	Results []*Result // one per check, in the order of Class.Checks; nil if it did not build
}

// Result is one run of one scenario against one student's server.
type Result struct {
	Check      string
	Verdict    string // the table's cell
	Differing  int    // lines of the diff: golden lines missing ("-") plus lines not in the golden ("+")
	Diff       string // the unified diff of the golden and the transcript, as compared ("" if equal)
	Transcript string // the transcript, cut at a bound; "!! why" ends it if the replay failed
	Stderr     string // the server's stderr, its first and last 64 KiB
}

// A check is one column: a scenario, the golden transcript it is compared with, and how.
type check struct {
	name, scenario, golden string
	rule
}

// rule is how a step's tests compare a scenario's transcript with its golden one.
type rule struct {
	leave  []*regexp.Regexp // lines left out of both before comparing
	prefix bool             // the golden is the transcript's beginning, up to its own last line
}

// rules holds, per step and scenario, what the step's own tests leave out; every other scenario with
// a golden is compared whole, as tracetest.Golden does. (step03-write-queues/main_test.go:
// TestShutdownOnSIGTERM and slowReader.)
var rules = map[string]map[string]rule{
	"step03-write-queues": {
		"shutdown":    {leave: []*regexp.Regexp{tracing.Received, tracing.SlowReaderWrites}},
		"slow-reader": {prefix: true},
	},
}

// checks lists what to play against each student's step: the step's scenarios that have a golden
// transcript, or the exercise's check.
func checks(o Options) (step string, cs []check, ungraded []string, err error) {
	if o.Exercise != "" {
		ex, err := exercises.Find(o.Root, o.Exercise)
		if err != nil {
			return "", nil, nil, err
		}
		return ex.Step, []check{{name: ex.Name, scenario: filepath.Join(ex.Dir, "check.txt"), golden: filepath.Join(ex.Dir, "expected.trace")}}, nil, nil
	}
	dir := filepath.Join(o.Root, o.Step)
	scenarios, _ := filepath.Glob(filepath.Join(dir, "scenarios", "*.txt"))
	if len(scenarios) == 0 {
		return "", nil, nil, fmt.Errorf("no %s/scenarios/*.txt in %s", o.Step, o.Root)
	}
	for _, sc := range scenarios {
		name := strings.TrimSuffix(filepath.Base(sc), ".txt")
		if len(o.Only) > 0 && !slices.Contains(o.Only, name) {
			continue
		}
		golden := filepath.Join(dir, "testdata", name+".trace")
		if _, err := os.Stat(golden); err != nil {
			ungraded = append(ungraded, name)
			continue
		}
		cs = append(cs, check{name: name, scenario: sc, golden: golden, rule: rules[o.Step][name]})
	}
	for _, name := range o.Only {
		if !slices.ContainsFunc(cs, func(c check) bool { return c.name == name }) {
			return "", nil, nil, fmt.Errorf("%s has no scenario %q with a golden transcript", o.Step, name)
		}
	}
	return o.Step, cs, ungraded, nil
}

// Grade grades every submission in dir: each folder, or .zip, is one student's. It returns an error
// only when it could not grade (no such step, no submissions, interrupted): whatever a student's
// program does is a result.
func Grade(ctx context.Context, o Options, dir string) (*Class, error) {
	step, cs, ungraded, err := checks(o)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") && (e.IsDir() || strings.HasSuffix(e.Name(), ".zip")) {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no submissions in %s: want one folder or .zip per student", dir)
	}
	if o.Parallel <= 0 {
		o.Parallel = runtime.NumCPU()
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	if o.BuildTimeout <= 0 {
		o.BuildTimeout = 2 * time.Minute
	}
	// Scratch space: the binaries, the unpacked zips and the transcripts the replayer keeps, outside the
	// module; and a folder inside it, for bare step folders to build against it (under testdata/, which
	// go's ./... patterns skip).
	tmp, err := os.MkdirTemp("", "muxlab-grade-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	inModule, err := os.MkdirTemp(o.Root, "grade-work-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(inModule)
	keep := replay.KeepDir
	replay.KeepDir = filepath.Join(tmp, "kept")
	defer func() { replay.KeepDir = keep }()

	g := &grader{o: o, step: step, checks: cs, tmp: tmp, inModule: filepath.Join(inModule, "testdata")}
	class := &Class{Step: step, Ungraded: ungraded}
	for _, c := range cs {
		class.Checks = append(class.Checks, c.name)
	}
	class.Students = make([]*Student, len(names))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(o.Parallel, len(names)) {
		wg.Go(func() {
			for i := range work {
				class.Students[i] = g.student(ctx, names[i], filepath.Join(dir, names[i]))
			}
		})
	}
	for i := range names {
		select {
		case work <- i:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("grading stopped: %w", err)
	}
	for _, s := range class.Students {
		if s.Wrong != "" {
			class.Unreadable++
		}
	}
	return class, nil
}

// grader is what every student's grading shares.
type grader struct {
	o        Options
	step     string
	checks   []check
	tmp      string // scratch space outside the module
	inModule string // scratch space inside it
}

// student grades one submission: finds its step, builds it once, plays every check.
func (g *grader) student(ctx context.Context, entry, path string) *Student {
	name := strings.TrimSuffix(entry, ".zip")
	st := &Student{Name: name}
	dir, zipped := path, strings.HasSuffix(entry, ".zip")
	if zipped {
		dir = filepath.Join(g.tmp, "unzipped", name)
		if err := unzip(path, dir); err != nil {
			st.Took, st.Wrong = "zip", "cannot unpack: "+err.Error()
			return st
		}
	}
	sub := find(name, dir, g.step)
	st.Took, st.Wrong = sub.Took, sub.Wrong
	if zipped {
		st.Took = strings.TrimSpace("zip: " + sub.Took)
	}
	if st.Wrong != "" {
		return st
	}
	bin, log, err := g.build(ctx, sub)
	if err != nil {
		st.Build = log
		if errors.Is(err, errBuildTimeout) {
			st.Build = err.Error() + "\n" + log
		}
		return st
	}
	for _, c := range g.checks {
		if ctx.Err() != nil {
			break
		}
		st.Results = append(st.Results, g.play(ctx, bin, c))
	}
	return st
}
