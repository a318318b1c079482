package tracetest

// The line diffs the lessons keep as golden files (a step's code against the step before it, one
// transcript against another). The edit script and the unified diff live in package tracing, whose
// Diff shows a failed comparison the same way; these names are what the steps' tests call.

import (
	"strings"

	"muxlab/tracing"
)

// An Edit is one line of a diff: ' ' in both, '-' only in the old text, '+' only in the new.
type Edit = tracing.Edit

// EditScript turns a into b with the fewest deletions and insertions (a longest common subsequence).
func EditScript(a, b []string) []Edit { return tracing.EditScript(a, b) }

// Unified renders the edit script as a unified diff (diff -u) with context lines around each change.
func Unified(nameA, nameB string, script []Edit, context int) string {
	return tracing.Unified(nameA, nameB, script, context)
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
