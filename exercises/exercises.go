//go:build unix

// Package exercises checks the lab's exercises: each one is a folder NNx-name/ holding task.md (what to
// do), check.txt (a scenario), expected.trace (the transcript a solved step produces) and, out of the
// way, solution/solution.patch. `go run ./exercises/check NNx` replays check.txt against the step in the
// working tree and diffs the transcript with expected.trace.
package exercises

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/scenario"
)

// Exercise is one exercise folder.
type Exercise struct {
	Name string // folder name, e.g. "02a-goodbye"
	Dir  string // path of the folder
	Step string // the step folder it changes, e.g. "step02-select-echo"
}

// List returns the exercises under root (the repository), in order.
func List(root string) ([]Exercise, error) {
	dirs, err := filepath.Glob(filepath.Join(root, "exercises", "[0-9][0-9]*-*"))
	if err != nil {
		return nil, err
	}
	sort.Strings(dirs)
	var out []Exercise
	for _, d := range dirs {
		name := filepath.Base(d)
		steps, _ := filepath.Glob(filepath.Join(root, "step"+name[:2]+"-*"))
		if len(steps) != 1 {
			return nil, fmt.Errorf("exercise %s: no single step%s-* folder for it", name, name[:2])
		}
		out = append(out, Exercise{Name: name, Dir: d, Step: filepath.Base(steps[0])})
	}
	return out, nil
}

// Find returns the exercise whose name starts with prefix ("02a").
func Find(root, prefix string) (Exercise, error) {
	all, err := List(root)
	if err != nil {
		return Exercise{}, err
	}
	for _, ex := range all {
		if strings.HasPrefix(ex.Name, prefix) {
			return ex, nil
		}
	}
	return Exercise{}, fmt.Errorf("no exercise %q under %s/exercises", prefix, root)
}

// Run replays the exercise's check scenario against the step program in pkg (built from root) and
// returns the transcript, and the diff with expected.trace ("" when solved): whole lines, "-" expected,
// "+" yours. If the replay failed, the diff starts with why, and with the server's exit status and
// last lines of stderr if it exited; a long transcript is then cut to its start and end (the whole of
// it is kept in a file the diff names).
func (ex Exercise) Run(root, pkg string) (transcript, diff string, err error) {
	sc, err := scenario.ParseFile(filepath.Join(ex.Dir, "check.txt"))
	if err != nil {
		return "", "", err
	}
	bin, err := replay.Build(root, pkg)
	if err != nil {
		return "", "", err
	}
	want, err := os.ReadFile(filepath.Join(ex.Dir, "expected.trace"))
	if err != nil && !os.IsNotExist(err) {
		return "", "", err
	}
	res, err := replay.Run(bin, sc)
	if err == nil {
		return res.Transcript, diffExpected(string(want), res.Transcript), nil
	}
	// A failed replay is a wrong answer, not a broken tool: say why, and show how far it got.
	why := err.Error()
	var f *replay.Failure
	if errors.As(err, &f) {
		why, transcript = f.Summary(), f.Excerpt
		if f.Kept != "" {
			why += "\n(the whole transcript is in " + f.Kept + ")"
		}
	}
	transcript += fmt.Sprintf("!! %v\n", firstLine(why))
	return transcript, why + "\n" + diffExpected(string(want), transcript), nil
}

// diffExpected is the line diff of the expected transcript and the student's. A server of several loops
// (step09) is compared loop by loop: how the loops' lines interleave changes from run to run.
func diffExpected(want, got string) string {
	return tracing.UnifiedDiff("expected.trace", "yours", tracing.ByLoop(want), tracing.ByLoop(got))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
