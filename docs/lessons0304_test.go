package docs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"muxlab/tracing"
)

// The diffs lessons 03 and 04 quote, kept in testdata/ and checked against the programs, so that a
// page cannot show a stale diff (go test ./docs -update rewrites them). Each compares a stretch of an
// old file with a stretch of a new one: a whole file (no from), one function (from "func NAME", no
// to), or the lines from the one containing from to the one containing to.
var lessonDiffs = []struct {
	golden              string
	old, oldFrom, oldTo string
	new, newFrom, newTo string
	context             int // 0: the whole stretch in one hunk
}{
	// Lesson 03: how the loop builds its lists, and how it walks what select reported.
	{"03-lists.diff",
		"step02-select-echo/main.go", "// Rebuild the set every turn", "tr.Selected(ready",
		"step03-write-queues/main.go", "// Rebuild the sets every turn", "tr.SelectReady(", 0},
	{"03-walk.diff",
		"step02-select-echo/main.go", "// Walk the ready list", "clients = slices.DeleteFunc(clients, func(c int)",
		"step03-write-queues/main.go", "// Handle what select reported", "clients = slices.DeleteFunc(clients, closeIfFinished)", 0},
	// Lesson 04: what changes in the loop when the echo becomes a room, and in the whole main.go.
	{"04-serve.diff", "step03-write-queues/main.go", "func serve", "", "step04-chat/main.go", "func serve", "", 1},
	{"04-main.diff", "step03-write-queues/main.go", "", "", "step04-chat/main.go", "", "", 3},
}

func TestLessonDiffs(t *testing.T) {
	for _, d := range lessonDiffs {
		old, oldAt := stretch(t, d.old, d.oldFrom, d.oldTo)
		new, newAt := stretch(t, d.new, d.newFrom, d.newTo)
		context := d.context
		if context == 0 {
			context = -1 // the whole stretch in one hunk
		}
		got := tracing.UnifiedAt(d.old, d.new, tracing.EditScript(old, new), context, oldAt, newAt)
		path := filepath.Join("testdata", d.golden)
		if *update {
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (go test ./docs -update writes it)", err)
		}
		if string(want) != got {
			t.Errorf("%s is stale (go test ./docs -update regenerates it):\n%s", path, tracing.Diff(string(want), got))
		}
	}
}

// stretch returns the lines of a file of the repository that a lessonDiffs entry names, and the line
// number of the first.
func stretch(t *testing.T, path, from, to string) ([]string, int) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Fatal(err)
	}
	lines := tracing.Lines(string(data))
	if from == "" {
		return lines, 1
	}
	if fn, ok := strings.CutPrefix(from, "func "); ok && to == "" {
		body, _, err := source(path, "func", fn) // with its doc comment, as the pages include it
		if err != nil {
			t.Fatal(err)
		}
		first := strings.SplitN(body, "\n", 2)[0]
		for i, l := range lines {
			if l == first {
				return tracing.Lines(body), i + 1
			}
		}
		t.Fatalf("%s: the first line of func %s is not a line of the file", path, fn)
	}
	for i, l := range lines {
		if !strings.Contains(l, from) {
			continue
		}
		for j := i; j < len(lines); j++ {
			if strings.Contains(lines[j], to) {
				return lines[i : j+1], i + 1
			}
		}
	}
	t.Fatalf("%s has no line with %q followed by one with %q: update lessonDiffs in docs/lessons0304_test.go", path, from, to)
	return nil, 0
}
