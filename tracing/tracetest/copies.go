package tracetest

// A later step carries some files of its parent (the echo, the room, the protocol, the signal pipe):
// a Go package cannot import a main package, and a student reads each step on its own. The copies
// must not drift. CheckCopies compares each copy with its original and allows only the lines listed,
// each with the reason it differs, so the diff between two steps stays the lesson and nothing else.

import (
	"os"
	"strings"
	"testing"

	"muxlab/tracing/scenario"
)

// A Copy is a file a step carries from another, and the lines allowed to differ between them.
type Copy struct {
	Original, Copy string            // paths, relative to the test's step
	Allowed        map[string]string // line -> why: lines the copy may add or lack, compared by their words (gofmt aligns)
}

// Unlisted returns the lines, as "-line" (only in original) or "+line" (only in the copy), that differ
// between the two texts and are not allowed. A //go:build line may always differ: the steps run on
// different systems.
func Unlisted(original, copy string, allowed map[string]string) []string {
	ok := map[string]bool{}
	for line := range allowed {
		ok[words(line)] = true
	}
	var out []string
	for _, e := range EditScript(strings.Split(original, "\n"), strings.Split(copy, "\n")) {
		line := words(e.Line)
		if e.Op != ' ' && !ok[line] && !strings.HasPrefix(line, "//go:build ") {
			out = append(out, string(e.Op)+e.Line)
		}
	}
	return out
}

// CheckCopies fails t for every line of a copy that differs from its original and is not listed, and
// for every listed line that no longer differs (a stale reason). It also proves, on a scratch copy of
// each, that one changed line that is not listed is caught.
func CheckCopies(t *testing.T, copies []Copy) {
	t.Helper()
	for _, c := range copies {
		original, err := os.ReadFile(c.Original)
		if err != nil {
			t.Fatal(err)
		}
		copied, err := os.ReadFile(c.Copy)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range Unlisted(string(original), string(copied), c.Allowed) {
			t.Errorf("%s differs from %s in a line not listed as allowed: %s", c.Copy, c.Original, l)
		}
		differing := map[string]bool{}
		for _, l := range Unlisted(string(original), string(copied), nil) {
			differing[words(l[1:])] = true
		}
		for line, why := range c.Allowed {
			if !differing[words(line)] {
				t.Errorf("%s: listed line %q (%s) no longer differs from %s: take it off the list", c.Copy, line, why, c.Original)
			}
		}
		// The scratch copy: the middle line of the copy, changed.
		lines := strings.Split(string(copied), "\n")
		mid := len(lines) / 2
		for mid < len(lines)-1 && strings.TrimSpace(lines[mid]) == "" {
			mid++
		}
		lines[mid] += " // changed"
		if got := Unlisted(string(original), strings.Join(lines, "\n"), c.Allowed); len(got) == 0 {
			t.Errorf("%s: a changed line (%q) in a scratch copy went unnoticed: the check is blind", c.Copy, lines[mid])
		}
	}
}

// words is a line with its runs of spaces made one: gofmt realigns comments when a field is added.
func words(line string) string { return strings.Join(strings.Fields(line), " ") }

// CheckScenarioCopies fails t for every scenario a step keeps as a copy of another step's (go:embed
// cannot reach ../, so a demo's scenario lives in the step's own folder) that is no longer the same
// as its original, or does not parse. copies maps each copy's path to its original's.
func CheckScenarioCopies(t *testing.T, copies map[string]string) {
	t.Helper()
	for mine, theirs := range copies {
		a, err := os.ReadFile(mine)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(theirs)
		if err != nil {
			t.Fatal(err)
		}
		if string(a) != string(b) {
			t.Errorf("%s is no longer a copy of %s: copy it again", mine, theirs)
		}
		if _, err := scenario.Parse(mine, string(a)); err != nil {
			t.Error(err)
		}
	}
}
