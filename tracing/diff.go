package tracing

// Line diffs, as diff -u prints them: a failed comparison shows whole lines ("-" want, "+" got) with
// context, and the lessons store the same rendering (tracetest.Unified) as golden files.

import (
	"fmt"
	"slices"
	"strings"
)

// Diff compares two traces line by line and returns a unified diff ("-" lines only in want, "+" lines
// only in got, 3 lines of context), or "" when their lines are equal.
func Diff(want, got string) string {
	return UnifiedDiff("want", "got", want, got)
}

// UnifiedDiff compares two texts line by line and returns a unified diff headed by their names, or ""
// when their lines are equal.
func UnifiedDiff(nameA, nameB, a, b string) string {
	la, lb := Lines(a), Lines(b)
	if slices.Equal(la, lb) {
		return ""
	}
	// The edit script's table grows with the product of the lengths, so the lines both texts begin and
	// end with are kept out of it: one changed line in a long trace stays cheap.
	pre := 0
	for pre < len(la) && pre < len(lb) && la[pre] == lb[pre] {
		pre++
	}
	suf := 0
	for suf < len(la)-pre && suf < len(lb)-pre && la[len(la)-1-suf] == lb[len(lb)-1-suf] {
		suf++
	}
	midA, midB := la[pre:len(la)-suf], lb[pre:len(lb)-suf]
	var script []Edit
	for _, l := range la[:pre] {
		script = append(script, Edit{' ', l})
	}
	if (len(midA)+1)*(len(midB)+1) <= maxTable {
		script = append(script, EditScript(midA, midB)...)
	} else {
		// Too big for a shortest edit script: the changed stretch is shown as removed, then added.
		for _, l := range midA {
			script = append(script, Edit{'-', l})
		}
		for _, l := range midB {
			script = append(script, Edit{'+', l})
		}
	}
	for _, l := range la[len(la)-suf:] {
		script = append(script, Edit{' ', l})
	}
	return Unified(nameA, nameB, script, 3)
}

// maxTable bounds the cells of EditScript's table that UnifiedDiff builds (8 bytes each).
const maxTable = 1 << 22

// Lines splits a trace into lines, without the empty string after a final newline.
func Lines(trace string) []string {
	trace = strings.TrimSuffix(trace, "\n")
	if trace == "" {
		return []string{}
	}
	return strings.Split(trace, "\n")
}

// An Edit is one line of a diff: ' ' in both, '-' only in the old text, '+' only in the new.
type Edit struct {
	Op   byte
	Line string
}

// EditScript turns a into b with the fewest deletions and insertions (a longest common subsequence).
func EditScript(a, b []string) []Edit {
	// common[i][j] is the length of the longest common subsequence of a[i:] and b[j:].
	common := make([][]int, len(a)+1)
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
	var script []Edit
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			script = append(script, Edit{' ', a[i]})
			i, j = i+1, j+1
		case j == len(b) || i < len(a) && common[i+1][j] >= common[i][j+1]:
			script = append(script, Edit{'-', a[i]})
			i++
		default:
			script = append(script, Edit{'+', b[j]})
			j++
		}
	}
	return script
}

// Unified renders the edit script as a unified diff (diff -u) with context lines around each change.
func Unified(nameA, nameB string, script []Edit, context int) string {
	return unified(nameA, nameB, script, context, 1, 1)
}

// UnifiedAt is Unified for stretches of files that start at lines atA and atB, as a lesson quotes the
// change to one function; a context below 0 makes the whole stretch one hunk, unchanged lines and all.
func UnifiedAt(nameA, nameB string, script []Edit, context, atA, atB int) string {
	return unified(nameA, nameB, script, context, atA, atB)
}

// unified renders a unified diff of texts that start at lines atA and atB; a context below 0 makes the
// whole script one hunk.
func unified(nameA, nameB string, script []Edit, context, atA, atB int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "--- %s\n+++ %s\n", nameA, nameB)
	// lineA[k] and lineB[k] are the 1-based line numbers reached before script[k].
	lineA, lineB := make([]int, len(script)+1), make([]int, len(script)+1)
	lineA[0], lineB[0] = atA, atB
	for k, e := range script {
		lineA[k+1], lineB[k+1] = lineA[k], lineB[k]
		if e.Op != '+' {
			lineA[k+1]++
		}
		if e.Op != '-' {
			lineB[k+1]++
		}
	}
	whole := context < 0
	for k := 0; k < len(script); {
		if script[k].Op == ' ' && !whole {
			k++
			continue
		}
		// A hunk: from context lines before this change to context lines after the last change that
		// is less than 2*context unchanged lines away.
		start, end := max(0, k-context), k
		if whole {
			start, end = 0, len(script)
		}
		for end < len(script) {
			next := end
			for next < len(script) && script[next].Op == ' ' {
				next++
			}
			if next == len(script) || next-end > 2*context {
				break
			}
			for next < len(script) && script[next].Op != ' ' {
				next++
			}
			end = next
		}
		end = min(len(script), end+max(context, 0))
		fmt.Fprintf(&b, "@@ -%d,%d +%d,%d @@\n", lineA[start], lineA[end]-lineA[start], lineB[start], lineB[end]-lineB[start])
		for _, e := range script[start:end] {
			b.WriteString(strings.TrimRight(string(e.Op)+e.Line, " ") + "\n")
		}
		k = end
	}
	return b.String()
}
