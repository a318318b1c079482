//go:build linux

package grade

import (
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// Table is the class's table, student by check, as a markdown table whose columns are aligned, so
// that it reads the same in a terminal.
func (c *Class) Table() string {
	rows := [][]string{append([]string{"student", "took"}, c.Checks...)}
	for _, s := range c.Students {
		row := []string{s.Name, s.Took}
		for i := range c.Checks {
			row = append(row, s.Cell(i))
		}
		rows = append(rows, row)
	}
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			width[i] = max(width[i], utf8.RuneCountInString(cell))
		}
	}
	var b strings.Builder
	line := func(row []string) {
		for i, cell := range row {
			fmt.Fprintf(&b, "| %s%s ", cell, strings.Repeat(" ", width[i]-utf8.RuneCountInString(cell)))
		}
		b.WriteString("|\n")
	}
	line(rows[0])
	for i := range width {
		fmt.Fprintf(&b, "|%s", strings.Repeat("-", width[i]+2))
	}
	b.WriteString("|\n")
	for _, row := range rows[1:] {
		line(row)
	}
	return b.String()
}

// Cell is the student's cell in the column of check i.
func (s *Student) Cell(i int) string {
	var cell string
	switch {
	case s.Wrong != "":
		cell = "cannot grade: " + s.Wrong
	case s.Results == nil:
		cell = "does not build"
	case i < len(s.Results):
		cell = s.Results[i].Verdict
	default:
		cell = "not run"
	}
	return strings.ReplaceAll(cell, "|", `\|`)
}

// Legend says what the cells mean.
const Legend = `- **pass**: the transcript is the golden one, compared as the step's own tests compare it.
- **N lines differ**: the line diff of the golden transcript and the student's has N lines: "-" lines the
  golden has and the student's lacks, "+" lines the reverse. A replay that stopped (an expectation
  failed) ends the student's transcript with "!! why", which counts as one.
- **hung after N s**: the scenario waited N s for something that never came (an echo, room to send),
  with the server asleep; or the run outlived its time limit and was killed.
- **busy loop**: the server wanted more than half a core (CPU time plus time waiting for a CPU) in two
  seconds in a row while the scenario waited; it is killed.
- **crashed (exit status, last stderr line)**: the server exited by itself, before the scenario ended.
- **leaked fds (N sockets)**: when the scenario's clients had all closed, the server still held N more
  sockets than before the first client came.
- **does not build**: go build failed; its output is in the report.
`

// WriteReport writes the report into dir: README.md (the table, then each student's results with
// their line diffs), index.html (the same table, each cell opening that run's diff), and for each
// student and check the transcript, the diff and the server's stderr as files.
func (c *Class) WriteReport(dir, command string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# %s: grades\n\n```sh\n%s\n```\n\n%s\n%s", c.Step, command, c.Table(), Legend)
	if len(c.Ungraded) > 0 {
		fmt.Fprintf(&md, "\nScenarios without a golden transcript, not graded: %s.\n", strings.Join(c.Ungraded, ", "))
	}
	for _, s := range c.Students {
		md.WriteString("\n" + s.Markdown())
		for _, r := range s.Results {
			base := filepath.Join(dir, s.Name, r.Check)
			if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(base+".trace", []byte(r.Transcript), 0o644); err != nil {
				return err
			}
			for ext, text := range map[string]string{".diff": r.Diff, ".stderr": r.Stderr} {
				if text == "" {
					continue
				}
				if err := os.WriteFile(base+ext, []byte(text), 0o644); err != nil {
					return err
				}
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "index.html"))
	if err != nil {
		return err
	}
	if err := page.Execute(f, c); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// maxDiffLines bounds a diff shown in the report; the whole of it is in its file.
const maxDiffLines = 200

// Markdown is the student's section of the report.
func (s *Student) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s (%s)\n\n", s.Name, s.Took)
	switch {
	case s.Wrong != "":
		fmt.Fprintf(&b, "Cannot grade: %s.\n", s.Wrong)
	case s.Results == nil:
		fmt.Fprintf(&b, "Does not build:\n\n```text\n%s```\n", ensureNewline(s.Build))
	}
	for _, r := range s.Results {
		fmt.Fprintf(&b, "- **%s**: %s\n", r.Check, r.Verdict)
		if r.Verdict == "pass" || r.Diff == "" {
			continue
		}
		// ~~~, not ```: a page that quotes this section in a ``` block stays one block.
		fmt.Fprintf(&b, "\n  ~~~diff\n")
		for _, l := range shown(r.Diff) {
			b.WriteString("  " + l + "\n")
		}
		b.WriteString("  ~~~\n\n")
	}
	return b.String()
}

// shown is the diff's lines, cut at maxDiffLines.
func shown(diff string) []string {
	lines := strings.Split(strings.TrimSuffix(diff, "\n"), "\n")
	if len(lines) > maxDiffLines {
		lines = append(lines[:maxDiffLines:maxDiffLines], fmt.Sprintf("... %d more lines (the whole diff is in the .diff file)", len(lines)-maxDiffLines))
	}
	return lines
}

func ensureNewline(s string) string {
	if s != "" && !strings.HasSuffix(s, "\n") {
		return s + "\n"
	}
	return s
}

// page is index.html: the table, each cell a link that opens its run's diff below (a <details>
// opened by the link's fragment, by the script, or by a click).
var page = template.Must(template.New("index").Funcs(template.FuncMap{
	"shown": shown,
	"class": func(line string) string {
		switch {
		case strings.HasPrefix(line, "@@"), strings.HasPrefix(line, "--- "), strings.HasPrefix(line, "+++ "):
			return "hunk"
		case strings.HasPrefix(line, "-"):
			return "del"
		case strings.HasPrefix(line, "+"):
			return "add"
		}
		return ""
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Step}}: grades</title>
<style>
body{font-family:sans-serif;margin:2em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
td.pass{background:#e6f4e6}td.fail{background:#fbeaea}
pre{background:#f6f6f6;padding:.5em;overflow:auto}
.del{color:#a00}.add{color:#070}.hunk{color:#07a}
</style></head><body>
<h1>{{.Step}}: grades</h1>
<table><tr><th>student</th><th>took</th>{{range .Checks}}<th>{{.}}</th>{{end}}</tr>
{{range $s := .Students}}<tr><td><a href="#{{$s.Name}}">{{$s.Name}}</a></td><td>{{$s.Took}}</td>{{range $i, $c := $.Checks}}{{$cell := $s.Cell $i}}<td class="{{if eq $cell "pass"}}pass{{else}}fail{{end}}">{{if and $s.Results (lt $i (len $s.Results))}}<a href="#{{$s.Name}}-{{$c}}">{{$cell}}</a>{{else}}<a href="#{{$s.Name}}">{{$cell}}</a>{{end}}</td>{{end}}</tr>
{{end}}</table>
{{range $s := .Students}}
<h2 id="{{$s.Name}}">{{$s.Name}} ({{$s.Took}})</h2>
{{if $s.Wrong}}<p>Cannot grade: {{$s.Wrong}}.</p>{{else if not $s.Results}}<p>Does not build:</p><pre>{{$s.Build}}</pre>{{end}}
{{range $r := $s.Results}}<details id="{{$s.Name}}-{{$r.Check}}"><summary>{{$r.Check}}: {{$r.Verdict}}</summary>
{{if $r.Diff}}<pre>{{range shown $r.Diff}}<span class="{{class .}}">{{.}}</span>
{{end}}</pre>{{else}}<p>The transcript is the golden one.</p>{{end}}
<p><a href="{{$s.Name}}/{{$r.Check}}.trace">transcript</a>{{if $r.Diff}} · <a href="{{$s.Name}}/{{$r.Check}}.diff">diff</a>{{end}}{{if $r.Stderr}} · <a href="{{$s.Name}}/{{$r.Check}}.stderr">stderr</a>{{end}}</p>
</details>
{{end}}{{end}}
<script>
function openTarget(){var e=document.getElementById(decodeURIComponent(location.hash.slice(1)));if(e&&e.tagName==="DETAILS"){e.open=true;e.scrollIntoView()}}
addEventListener("hashchange",openTarget);openTarget();
</script>
</body></html>
`))
