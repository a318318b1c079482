package tracetest

// The line diffs the lessons keep as golden files (a step's code against the step before it, one
// transcript against another): an edit script by longest common subsequence, rendered whole or as a
// unified diff. go-cmp's diff (tracing.Diff) is for reading a failure; these are for storing.

import (
	"fmt"
	"strings"
)

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

// LineDiff returns the lines only in a and the lines only in b.
func LineDiff(a, b []string) (onlyA, onlyB []string) {
	for _, e := range EditScript(a, b) {
		switch e.Op {
		case '-':
			onlyA = append(onlyA, e.Line)
		case '+':
			onlyB = append(onlyB, e.Line)
		}
	}
	return onlyA, onlyB
}

// Render writes a whole edit script, one line per line of either text, prefixed by its op.
func Render(script []Edit) string {
	var b strings.Builder
	for _, e := range script {
		b.WriteString(strings.TrimRight(string(e.Op)+" "+e.Line, " ") + "\n")
	}
	return b.String()
}

// Unified renders the edit script as a unified diff (diff -u) with context lines around each change.
func Unified(nameA, nameB string, script []Edit, context int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "--- %s\n+++ %s\n", nameA, nameB)
	// lineA[k] and lineB[k] are the 1-based line numbers reached before script[k].
	lineA, lineB := make([]int, len(script)+1), make([]int, len(script)+1)
	lineA[0], lineB[0] = 1, 1
	for k, e := range script {
		lineA[k+1], lineB[k+1] = lineA[k], lineB[k]
		if e.Op != '+' {
			lineA[k+1]++
		}
		if e.Op != '-' {
			lineB[k+1]++
		}
	}
	for k := 0; k < len(script); {
		if script[k].Op == ' ' {
			k++
			continue
		}
		// A hunk: from context lines before this change to context lines after the last change that
		// is less than 2*context unchanged lines away.
		start, end := max(0, k-context), k
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
		end = min(len(script), end+context)
		fmt.Fprintf(&b, "@@ -%d,%d +%d,%d @@\n", lineA[start], lineA[end]-lineA[start], lineB[start], lineB[end]-lineB[start])
		for _, e := range script[start:end] {
			b.WriteString(strings.TrimRight(string(e.Op)+e.Line, " ") + "\n")
		}
		k = end
	}
	return b.String()
}
