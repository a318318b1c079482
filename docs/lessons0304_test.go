package docs

import (
	"fmt"
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
		got := unified(d.old, d.new, editScript(old, new), d.context, oldAt, newAt)
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

// An edit is one line of a diff: ' ' in both texts, '-' only in the old one, '+' only in the new one.
// (The steps' tests have the same diff in tracing/tracetest, whose -update flag would clash with this
// package's.)
type edit struct {
	op   byte
	line string
}

// editScript turns a into b with the fewest deletions and insertions (a longest common subsequence).
func editScript(a, b []string) []edit {
	common := make([][]int, len(a)+1) // common[i][j]: the longest common subsequence of a[i:] and b[j:]
	for i := range common {
		common[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				common[i][j] = common[i+1][j+1] + 1
			} else {
				common[i][j] = max(common[i+1][j], common[i][j+1])
			}
		}
	}
	var script []edit
	for i, j := 0, 0; i < len(a) || j < len(b); {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			script = append(script, edit{' ', a[i]})
			i, j = i+1, j+1
		case j == len(b) || i < len(a) && common[i+1][j] >= common[i][j+1]:
			script = append(script, edit{'-', a[i]})
			i++
		default:
			script = append(script, edit{'+', b[j]})
			j++
		}
	}
	return script
}

// unified renders an edit script as a unified diff (diff -u) with context lines around each change;
// with context 0, the whole script as one hunk. atA and atB are the line numbers the texts start at.
func unified(nameA, nameB string, script []edit, context, atA, atB int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "--- %s\n+++ %s\n", nameA, nameB)
	lineA, lineB := make([]int, len(script)+1), make([]int, len(script)+1) // before script[k]
	lineA[0], lineB[0] = atA, atB
	for k, e := range script {
		lineA[k+1], lineB[k+1] = lineA[k], lineB[k]
		if e.op != '+' {
			lineA[k+1]++
		}
		if e.op != '-' {
			lineB[k+1]++
		}
	}
	whole := context == 0
	for k := 0; k < len(script); {
		if script[k].op == ' ' && !whole {
			k++
			continue
		}
		start, end := max(0, k-context), k
		if whole {
			start, end = 0, len(script)
		}
		for end < len(script) { // take in the next change if fewer than 2*context lines away
			next := end
			for next < len(script) && script[next].op == ' ' {
				next++
			}
			if next == len(script) || next-end > 2*context {
				break
			}
			for next < len(script) && script[next].op != ' ' {
				next++
			}
			end = next
		}
		end = min(len(script), end+context)
		fmt.Fprintf(&b, "@@ -%d,%d +%d,%d @@\n", lineA[start], lineA[end]-lineA[start], lineB[start], lineB[end]-lineB[start])
		for _, e := range script[start:end] {
			b.WriteString(strings.TrimRight(string(e.op)+e.line, " ") + "\n")
		}
		k = end
	}
	return b.String()
}
