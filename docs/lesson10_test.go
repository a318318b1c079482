package docs

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"muxlab/tracing"
)

// Lesson 10 sets step10 beside step05 (and step09, once it lands) and the goroutine baseline, in the
// figures of one run of the bench: testdata/10-figures.txt is taken from docs/performance.md, so that
// the lesson cannot quote a run the page no longer shows (go test ./docs -update rewrites it after
// go run ./bench). A server the run did not measure says so.
func TestLesson10Figures(t *testing.T) {
	perf, err := os.ReadFile("performance.md")
	if err != nil {
		t.Fatal(err)
	}
	got := lesson10Figures(string(perf))
	path := filepath.Join("testdata", "10-figures.txt")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./docs -update writes it)", err)
	}
	if string(want) != got {
		t.Errorf("%s is stale (go test ./docs -update regenerates it):\n%s", path, tracing.Diff(string(want), got))
	}
}

// The servers lesson 10 compares, by the start of their name in the bench's tables.
var lesson10Servers = []string{"step05 epoll LT", "step09", "step10 goroutines", "baseline goroutines"}

// lesson10Figures picks, for each of those servers, its idle memory per connection, its CPU per chat
// line and its CPU per echo at 1000 connections × 64 B, from the tables of performance.md.
func lesson10Figures(perf string) string {
	idle := tableColumn(perf, "## Idle memory", 0, 2)
	chat := tableColumn(perf, "## Chat fan-out", 0, 2)
	echo := map[string]string{}
	for _, row := range tableRows(perf, "## Echo: ping-pong") {
		if len(row) > 6 && row[0] == "1000" && row[1] == "64 B" {
			echo[row[2]] = row[6]
		}
	}
	run := regexp.MustCompile(`(?m)^Measured by .*$`).FindString(perf)
	var b strings.Builder
	fmt.Fprintf(&b, "From docs/performance.md: %s\n", strings.TrimSuffix(run, "."))
	fmt.Fprintf(&b, "Each figure is the median of the run's repetitions [and their range].\n\n")
	fmt.Fprintf(&b, "%-20s  %-26s  %-26s  %s\n", "server", "idle RSS per client, B", "chat CPU µs per line", "echo CPU µs/msg, 1000 × 64 B")
	for _, prefix := range lesson10Servers {
		// The first name in sort order that has the prefix: step09 has several variants in the tables,
		// and a map's order would pick a different one each run ("step09 1 loop" is the one to show).
		name, found := "", false
		for _, m := range []map[string]string{idle, chat, echo} {
			for n := range m {
				if strings.HasPrefix(n, prefix) && (!found || n < name) {
					name, found = n, true
				}
			}
		}
		if !found {
			if prefix == "step09" {
				continue // not landed, or not in this run: nothing to say
			}
			fmt.Fprintf(&b, "%-20s  not in this run of the bench: the next go run ./bench measures it\n", prefix)
			continue
		}
		fmt.Fprintf(&b, "%-20s  %-26s  %-26s  %s\n", name, or(idle[name]), or(chat[name]), or(echo[name]))
	}
	return b.String()
}

func or(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// tableRows returns the cells of the rows of the first table after heading, header and rule left out.
func tableRows(page, heading string) [][]string {
	i := strings.Index(page, "\n"+heading+"\n")
	if i < 0 {
		return nil
	}
	var rows [][]string
	in := false
	for _, l := range strings.Split(page[i+len(heading)+2:], "\n") {
		switch {
		case strings.HasPrefix(l, "|"):
			in = true
			cells := strings.Split(strings.Trim(l, "|"), "|")
			for j := range cells {
				cells[j] = strings.TrimSpace(cells[j])
			}
			if !strings.HasPrefix(cells[0], "---") && !strings.HasPrefix(cells[0], ":--") {
				rows = append(rows, cells)
			}
		case in:
			return rows[1:] // the first row is the header
		case strings.HasPrefix(l, "## "):
			return nil
		}
	}
	if len(rows) == 0 {
		return nil
	}
	return rows[1:]
}

// tableColumn maps the key column of the first table after heading to another column.
func tableColumn(page, heading string, key, col int) map[string]string {
	m := map[string]string{}
	for _, row := range tableRows(page, heading) {
		if len(row) > max(key, col) {
			m[row[key]] = row[col]
		}
	}
	return m
}
