//go:build linux

package faults

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

// A target is one step program run one way: a column of the matrix.
type target struct {
	name       string // the column's name
	dir        string // the step's folder, from here
	chat       bool   // it serves step04's chat room (else step03's echo)
	selectLoop bool   // it waits in select: an fd past 1023 cannot be watched
	budget     bool   // it has -readbudget (step06, edge-triggered): -readbudget N on the test's command line reaches it
	clock      bool   // it keeps deadlines (step07): -idle and -linetimeout
	// limitAtStart: its accept request keeps the fd limit it was submitted under (io_uring, step08),
	// so the emfile row starts it under the lowered limit instead of lowering a running server's.
	limitAtStart bool

	args []string // flags of its own (step09: how many loops)
}

var targets = []target{
	{name: "step03", dir: "../step03-write-queues", selectLoop: true},
	{name: "step04", dir: "../step04-chat", chat: true, selectLoop: true},
	{name: "step05-echo", dir: "../step05-epoll"},
	{name: "step05-chat", dir: "../step05-epoll", chat: true},
	{name: "step06-echo", dir: "../step06-edge-triggered", budget: true},
	{name: "step06-chat", dir: "../step06-edge-triggered", chat: true, budget: true},
	{name: "step07-echo", dir: "../step07-timers", clock: true},
	{name: "step07-chat", dir: "../step07-timers", chat: true, clock: true},
	{name: "step08-echo", dir: "../step08-io-uring", limitAtStart: true},
	{name: "step08-chat", dir: "../step08-io-uring", chat: true, limitAtStart: true},
	{name: "step09-echo", dir: "../step09-multicore", args: []string{"-loops", "2"}},
	{name: "step09-chat", dir: "../step09-multicore", chat: true, args: []string{"-loops", "2"}},
	{name: "step09-chat-4", dir: "../step09-multicore", chat: true, args: []string{"-loops", "4"}},
	{name: "step10-chat", dir: "../step10-goroutines", chat: true},
}

// readBudget, if set (>= 0), runs step06 with -readbudget N instead of its default: -readbudget 0 is
// the naive drain, which the flood row shows is unfair (go test ./faults -run 'TestFaults/parallel/flood'
// -readbudget 0). The matrix is compared with testdata/matrix.txt only with the default.
var readBudget = flag.Int("readbudget", -1, "run step06 with -readbudget N (default: its own default); the matrix is not compared")

// stepsDir, if set, builds the step programs from another checkout of the lab (a worktree of an
// older commit: git worktree add /tmp/base COMMIT), to show a row failing before the fix it guards:
// go test ./faults -run 'TestFaults/parallel/who-flood' -steps /tmp/base. Where that checkout has no
// step06, its columns run step05 with -et, the edge-triggered mode that became step06. The matrix is
// not compared.
var stepsDir = flag.String("steps", "", "build the steps from this checkout instead (e.g. a worktree of an older commit); the matrix is not compared")

// serverArgs go to every step: a small send buffer per client (every step has -sndbuf), so that a
// client that does not read fills it with a few tens of kilobytes, the same on every run.
var serverArgs = []string{"-sndbuf", "16384"}

// notYet is how a cell reads when its step (or its mode) has not landed: the suite grows as they do.
type notYet string

// prepare builds tg's program and returns the flags that run it as tg says, or a reason it cannot run
// yet. It is computed once per target.
func prepare(t *testing.T, tg target) (bin string, args []string, missing notYet) {
	t.Helper()
	preparedMu.Lock()
	defer preparedMu.Unlock()
	if p, ok := prepared[tg.name]; ok {
		return p.bin, p.args, p.missing
	}
	p := preparedTarget{}
	defer func() { prepared[tg.name] = p }()
	root, pkg := ".", tg.dir
	if *stepsDir != "" {
		root, pkg = *stepsDir, "./"+filepath.Base(tg.dir)
	}
	et := false // step05's old -et mode stands in for step06
	if _, err := os.Stat(filepath.Join(root, pkg, "main.go")); err != nil && tg.budget && *stepsDir != "" {
		pkg, et = "./step05-epoll", true
	}
	if _, err := os.Stat(filepath.Join(root, pkg, "main.go")); err != nil {
		p.missing = notYet(filepath.Base(tg.dir) + " does not exist yet")
		return p.bin, p.args, p.missing
	}
	bin, err := replay.Build(root, pkg)
	if err != nil {
		t.Fatal(err)
	}
	p.bin = bin
	flags := flagNames(p.bin)
	p.args = append(slices.Clone(serverArgs), tg.args...)
	if et {
		if !flags["et"] {
			p.missing = notYet(filepath.Base(tg.dir) + " does not exist there, nor step05 -et")
			return p.bin, p.args, p.missing
		}
		p.args = append(p.args, "-et")
	}
	if tg.budget && *readBudget >= 0 {
		if !flags["readbudget"] {
			p.missing = notYet(filepath.Base(tg.dir) + " has no -readbudget flag yet")
			return p.bin, p.args, p.missing
		}
		p.args = append(p.args, "-readbudget", strconv.Itoa(*readBudget))
	}
	// step05 and step06 serve either program: -app NAME, or -echo with the chat room by default.
	switch {
	case flags["app"] && tg.chat:
		p.args = append(p.args, "-app", "chat")
	case flags["app"]:
		p.args = append(p.args, "-app", "echo")
	case flags["echo"] && !tg.chat:
		p.args = append(p.args, "-echo")
	}
	if tg.chat && !greets(t, p.bin, p.args) {
		p.missing = notYet(filepath.Base(tg.dir) + " does not serve the chat room yet")
	}
	return p.bin, p.args, p.missing
}

type preparedTarget struct {
	bin     string
	args    []string
	missing notYet
}

var (
	preparedMu sync.Mutex
	prepared   = map[string]preparedTarget{}
)

// flagNames lists the flags a step program accepts, from its -h output.
func flagNames(bin string) map[string]bool {
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-(\w+)`).FindAllStringSubmatch(string(out), -1) {
		names[m[1]] = true
	}
	return names
}

// greets reports whether the program says something to a client that just connected: the chat room
// welcomes its members, an echo says nothing until spoken to. The replayer has let the server settle
// after the connect, so a greeting, if there is one, is already in the client's socket.
func greets(t *testing.T, bin string, args []string) bool {
	s, err := replay.Open(bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Do("connect probe"); err != nil {
		t.Fatal(err)
	}
	return s.Client("probe").ExpectNothing(time.Millisecond) != nil
}

// The results of the matrix, for the table in docs/faults.md.
type cell struct {
	status   string   // ok, FAIL, not yet
	evidence []string // the trace lines that named what happened
}

var (
	resultsMu sync.Mutex
	results   = map[string]map[string]*cell{} // by fault, then by target
)

func record(fault, tg string, c *cell) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if results[fault] == nil {
		results[fault] = map[string]*cell{}
	}
	results[fault][tg] = c
}

// TestFaults plays every fault against every target: one subtest per cell of the matrix,
// TestFaults/FAULT/TARGET. The faults that change what the whole test process passes to its children
// (inherited fds) run first, alone; the others then run in parallel. When every cell has run, the
// table is compared with testdata/matrix.txt (rewritten with -update), which docs/faults.md includes.
func TestFaults(t *testing.T) {
	var alone, together []fault
	for _, f := range faultList {
		if f.alone {
			alone = append(alone, f)
		} else {
			together = append(together, f)
		}
	}
	for _, f := range alone {
		t.Run(f.name, func(t *testing.T) {
			for _, tg := range targets {
				t.Run(tg.name, func(t *testing.T) { runCell(t, f, tg) })
			}
		})
	}
	t.Run("parallel", func(t *testing.T) {
		for _, f := range together {
			for _, tg := range targets {
				t.Run(f.name+"/"+tg.name, func(t *testing.T) {
					t.Parallel()
					runCell(t, f, tg)
				})
			}
		}
	})
	checkMatrix(t)
}

// runCell plays fault f against tg and records the cell.
func runCell(t *testing.T, f fault, tg target) {
	c := &cell{}
	record(f.name, tg.name, c)
	t.Cleanup(func() {
		switch {
		case t.Failed():
			c.status = "FAIL"
		case c.status == "":
			c.status = "ok"
		}
	})
	playCell(t, f, tg, c, &figures{})
}

// playCell plays fault f against tg: the cell's status and evidence go to c, what the row measured to
// fig.
func playCell(t *testing.T, f fault, tg target, c *cell, fig *figures) {
	if f.chatOnly && !tg.chat {
		c.status = "n/a"
		t.Skip("a fault of the chat room only")
	}
	bin, args, missing := prepare(t, tg)
	if missing != "" {
		c.status = "not yet"
		t.Skip(string(missing))
	}
	if f.needs != nil {
		if why := f.needs(); why != "" {
			c.status = "skipped"
			t.Skip(why)
		}
	}
	if f.args != nil {
		args = append(slices.Clone(args), f.args(tg)...)
	}
	if f.bare {
		f.run(&row{t: t, tg: tg, cell: c, bin: bin, args: args, fig: fig})
		return
	}
	var release func()
	if f.alone {
		release = holdLowFDs(t)
	}
	r := newRow(t, tg, bin, args, c)
	r.fig = fig
	if release != nil {
		release()
	}
	f.run(r)
}

// checkMatrix writes the table of results and compares it with testdata/matrix.txt, but only when
// every cell ran (a -run filter leaves a partial table, which proves nothing about the stored one).
func checkMatrix(t *testing.T) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if *readBudget >= 0 {
		t.Logf("matrix not checked: step06 ran with -readbudget %d", *readBudget)
		return
	}
	if *stepsDir != "" {
		t.Logf("matrix not checked: the steps came from %s", *stepsDir)
		return
	}
	for _, f := range faultList {
		for _, tg := range targets {
			if results[f.name][tg.name] == nil {
				t.Logf("matrix not checked: %s × %s did not run", f.name, tg.name)
				return
			}
			if results[f.name][tg.name].status == "skipped" {
				t.Logf("matrix not checked: %s × %s was skipped (this machine cannot play it)", f.name, tg.name)
				return
			}
		}
	}
	tracetest.Compare(t, filepath.Join("testdata", "matrix.txt"), matrix())
}

// matrix renders the results: the table, then what each trace said.
func matrix() string {
	var b strings.Builder
	w := []int{len("fault")}
	for _, f := range faultList {
		w[0] = max(w[0], len(f.name))
	}
	for _, tg := range targets {
		n := len(tg.name)
		for _, f := range faultList {
			n = max(n, len(results[f.name][tg.name].status))
		}
		w = append(w, n)
	}
	row := func(cells ...string) {
		for i, c := range cells {
			if i < len(cells)-1 {
				c += strings.Repeat(" ", w[i]-len(c)+2)
			}
			b.WriteString(c)
		}
		b.WriteString("\n")
	}
	head := []string{"fault"}
	for _, tg := range targets {
		head = append(head, tg.name)
	}
	row(head...)
	for _, f := range faultList {
		cells := []string{f.name}
		for _, tg := range targets {
			cells = append(cells, results[f.name][tg.name].status)
		}
		row(cells...)
	}
	b.WriteString("\nWhat the trace said (the first line of each kind the test looked for):\n")
	tw := 0 // the widest target name
	for _, tg := range targets {
		tw = max(tw, len(tg.name))
	}
	for _, f := range faultList {
		fmt.Fprintf(&b, "\n%s: %s\n", f.name, f.what)
		for _, tg := range targets {
			c := results[f.name][tg.name]
			if len(c.evidence) == 0 {
				fmt.Fprintf(&b, "  %-*s  (%s)\n", tw, tg.name, c.status)
				continue
			}
			for i, e := range c.evidence {
				name := tg.name
				if i > 0 {
					name = ""
				}
				fmt.Fprintf(&b, "  %-*s  %s\n", tw, name, e)
			}
		}
	}
	return b.String()
}

// numbers matches the counts in a trace line that change from run to run (bytes read, pending), and
// unquoted matches the count of a read's bytes the trace did not quote.
var (
	numbers  = regexp.MustCompile(`\b\d+ (bytes|pending)\b`)
	unquoted = regexp.MustCompile(`\.\.\.\(\+\d+\)`)
)

// firstMatch returns the first line of trace that re matches, or "".
func firstMatch(trace string, re *regexp.Regexp) string {
	for _, l := range tracing.Lines(trace) {
		if l = unloop(l); re.MatchString(l) {
			return l
		}
	}
	return ""
}

// countMatches counts the lines of trace that re matches.
func countMatches(trace string, re *regexp.Regexp) int {
	n := 0
	for _, l := range tracing.Lines(trace) {
		if re.MatchString(unloop(l)) {
			n++
		}
	}
	return n
}

// unloop takes the loop off a line of a server with several loops (step09: "L1 read c2 ..."), so that
// the rows read its trace as any other step's.
func unloop(line string) string { return loopPrefix.ReplaceAllString(line, "") }

var loopPrefix = regexp.MustCompile(`^L[0-9]+ `)

// shortTranscript keeps the end of a transcript for a failure message, with long lines cut.
func shortTranscript(s string) string {
	lines := tracing.Lines(s)
	if len(lines) > 80 {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-80)}, lines[len(lines)-80:]...)
	}
	for i, l := range lines {
		if len(l) > 160 {
			lines[i] = l[:160] + "...(+" + strconv.Itoa(len(l)-160) + ")"
		}
	}
	return strings.Join(lines, "\n")
}
