//go:build linux

package grade

import (
	"archive/zip"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"muxlab/exercises"
	"muxlab/tracing/tracetest"
)

var class30 = flag.Bool("class30", false, "also grade a class of 30 copies of step03, every kind of fixture represented (several minutes)")

const (
	root = "../.."
	step = "step03-write-queues"
)

// The kinds of submission the fixture class is made of: step03, with testdata/fixtures/KIND.patch
// applied (none for "ok").
var kinds = []string{
	"ok",       // the reference step
	"b1",       // the seed's B1: EOF ignored, a closed client stays in the read list
	"b3",       // the seed's B3: blocking writes, so a slow reader stalls everyone
	"nobuild",  // a type error
	"hang",     // never watches the write list: the echo is queued and never sent
	"spin",     // select with a zero timeout: a busy loop from the start
	"crash",    // exits with status 3 when a client hangs up
	"leak",     // never closes a finished client's socket (B2)
	"untraced", // does not trace its unqueue lines
}

// makeClass writes n submissions into dir, student01 to studentNN, of the kinds in turn, and returns
// each student's kind. They are laid out in turn as a step folder, a clone of the lab (go.mod, go.sum,
// tracing/ and the step), a step folder, and a zip of a step folder.
func makeClass(t testing.TB, dir string, n int) map[string]string {
	t.Helper()
	kindOf := map[string]string{}
	work := t.TempDir()
	for _, kind := range kinds {
		if err := exercises.CopyDir(filepath.Join(root, step), filepath.Join(work, kind, step)); err != nil {
			t.Fatal(err)
		}
		if kind == "ok" {
			continue
		}
		if err := exercises.ApplyPatch(filepath.Join(work, kind), filepath.Join("testdata", "fixtures", kind+".patch")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		name, kind := fmt.Sprintf("student%02d", i+1), kinds[i%len(kinds)]
		kindOf[name] = kind
		src := filepath.Join(work, kind, step)
		var err error
		switch i % 4 {
		case 0, 2:
			err = exercises.CopyDir(src, filepath.Join(dir, name))
		case 1:
			clone := filepath.Join(dir, name)
			for _, f := range []string{"go.mod", "go.sum"} {
				if err == nil {
					err = copyFile(filepath.Join(root, f), filepath.Join(clone, f))
				}
			}
			if err == nil {
				err = exercises.CopyDir(filepath.Join(root, "tracing"), filepath.Join(clone, "tracing"))
			}
			if err == nil {
				err = exercises.CopyDir(src, filepath.Join(clone, step))
			}
		case 3:
			err = zipDir(src, step, filepath.Join(dir, name+".zip"))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return kindOf
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(to), 0o755)
	}
	if err == nil {
		err = os.WriteFile(to, data, 0o644)
	}
	return err
}

// zipDir writes the folder dir into a zip, under the folder name top, as a student zips a step.
func zipDir(dir, top, archive string) error {
	f, err := os.Create(archive)
	if err != nil {
		return err
	}
	w := zip.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		zf, err := w.Create(filepath.ToSlash(filepath.Join(top, rel)))
		if err == nil {
			_, err = zf.Write(data)
		}
		return err
	})
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// A class of one student of each kind, graded on three of step03's scenarios (one compared whole, one
// leaving out what TCP timing decides, one compared up to the golden's end): the table is the expected
// one, kept in testdata/class.table, and the report holds each run's diff.
func TestGradeAClass(t *testing.T) {
	dir := t.TempDir()
	makeClass(t, dir, len(kinds))
	o := Options{Root: root, Step: step, Only: []string{"seed", "shutdown", "slow-reader"}, Stall: 3 * time.Second, Timeout: 30 * time.Second,
		Parallel: len(kinds)} // most of the time goes in waiting on hung servers: wait on them all at once
	class, err := Grade(context.Background(), o, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", class.Table())
	tracetest.Compare(t, filepath.Join("testdata", "class.table"), class.Table())
	report := filepath.Join(t.TempDir(), "report")
	if err := class.WriteReport(report, "go run ./tracing/cmd/grade -step step03 -only seed,shutdown,slow-reader -stall 3s class/"); err != nil {
		t.Fatal(err)
	}
	for _, s := range class.Students {
		if s.Name == "student09" { // untraced: a short diff, the same on every run
			tracetest.Compare(t, filepath.Join("testdata", "report-excerpt.md"), s.Markdown())
		}
	}
	page, err := os.ReadFile(filepath.Join(report, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<a href="#student09-seed">2 lines differ</a>`, `<details id="student09-seed">`, `<span class="del">-unqueue    c1 -4 bytes, 0 pending</span>`} {
		if !strings.Contains(string(page), want) {
			t.Errorf("index.html has no %s", want)
		}
	}
	if _, err := os.Stat(filepath.Join(report, "student09", "seed.diff")); err != nil {
		t.Error(err)
	}
	if stderr, err := os.ReadFile(filepath.Join(report, "student07", "seed.stderr")); err != nil || !strings.Contains(string(stderr), "a client hung up\n") {
		t.Errorf("the crashed student's stderr is not in the report: %q, %v", stderr, err)
	}
	if left, _ := filepath.Glob(filepath.Join(root, "grade-work-*")); len(left) > 0 {
		t.Errorf("the grader left %v behind", left)
	}
}

// The done criterion of issue 19: a class of 30 on this machine, with default settings, in under 10
// minutes, every student's row that of its kind. Run it with
// go test ./tracing/grade -run TestGradeAClassOf30 -class30 -v.
func TestGradeAClassOf30(t *testing.T) {
	if !*class30 {
		t.Skip("several minutes: run with -class30")
	}
	dir := t.TempDir()
	kindOf := makeClass(t, dir, 30)
	start := time.Now()
	class, err := Grade(context.Background(), Options{Root: root, Step: step}, dir)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("30 students graded in %v:\n%s", took.Round(time.Second), class.Table())
	tracetest.Compare(t, filepath.Join("testdata", "class30.table"), class.Table())
	rowOf := map[string]string{}
	for _, s := range class.Students {
		var cells []string
		for i := range class.Checks {
			cells = append(cells, s.Cell(i))
		}
		row := strings.Join(cells, " | ")
		if first, ok := rowOf[kindOf[s.Name]]; ok && first != row {
			t.Errorf("%s (%s): %s; another of its kind: %s", s.Name, kindOf[s.Name], row, first)
		}
		rowOf[kindOf[s.Name]] = row
	}
	if took > 10*time.Minute {
		t.Errorf("took %v, more than 10 minutes", took)
	}
}

// A zip cannot write outside the folder it is unpacked into.
func TestUnzipRefusesPathsOutside(t *testing.T) {
	for _, name := range []string{"../evil.go", "a/../../evil.go", "/etc/evil.go", `a\..\..\evil.go`} {
		archive := filepath.Join(t.TempDir(), "s.zip")
		f, _ := os.Create(archive)
		w := zip.NewWriter(f)
		zf, _ := w.Create(name)
		zf.Write([]byte("package main\n"))
		w.Close()
		f.Close()
		into := filepath.Join(t.TempDir(), "in")
		if err := unzip(archive, into); err == nil || !strings.Contains(err.Error(), "outside") {
			t.Errorf("%q: unzip said %v, want a path outside the archive refused", name, err)
		}
	}
}

// An exercise is graded by its check: the reference solution passes it, the shipped step does not.
func TestGradeAnExercise(t *testing.T) {
	ex, err := exercises.Find(root, "03a")
	if err != nil {
		t.Fatal(err)
	}
	dir, work := t.TempDir(), t.TempDir()
	if err := exercises.CopyDir(filepath.Join(root, ex.Step), filepath.Join(dir, "unsolved")); err != nil {
		t.Fatal(err)
	}
	if err := exercises.CopyDir(filepath.Join(root, ex.Step), filepath.Join(work, ex.Step)); err != nil {
		t.Fatal(err)
	}
	if err := exercises.ApplyPatch(work, filepath.Join(ex.Dir, "solution", "solution.patch")); err != nil {
		t.Fatal(err)
	}
	if err := exercises.CopyDir(filepath.Join(work, ex.Step), filepath.Join(dir, "solved")); err != nil {
		t.Fatal(err)
	}
	class, err := Grade(context.Background(), Options{Root: root, Exercise: "03a"}, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", class.Table())
	if len(class.Checks) != 1 || class.Checks[0] != ex.Name {
		t.Fatalf("columns %v, want the one check %s", class.Checks, ex.Name)
	}
	for _, s := range class.Students {
		got := s.Cell(0)
		if want := "pass"; s.Name == "solved" && got != want || s.Name == "unsolved" && !regexp.MustCompile(`^\d+ lines? differs?$`).MatchString(got) {
			t.Errorf("%s: %q", s.Name, got)
		}
	}
}

// Interrupted (Ctrl-C in the command), the grader kills the server it is running and removes every
// folder it made, in the module and in the temporary directory.
func TestInterruptedGradingLeavesNothing(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	dir := t.TempDir()
	makeClass(t, dir, 1)
	// student01 is "ok"; make it a hung one, so that there is a server to find running.
	hung := filepath.Join(t.TempDir(), "student01")
	if err := exercises.CopyDir(filepath.Join(root, step), filepath.Join(hung, step)); err != nil {
		t.Fatal(err)
	}
	if err := exercises.ApplyPatch(hung, filepath.Join("testdata", "fixtures", "hang.patch")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "student01"))
	if err := exercises.CopyDir(filepath.Join(hung, step), filepath.Join(dir, "student01")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := Grade(ctx, Options{Root: root, Step: step, Only: []string{"seed"}}, dir)
		done <- err
	}()
	var server int
	for deadline := time.Now().Add(2 * time.Minute); server == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no server of student01's started within 2 minutes")
		}
		server = child("student01")
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("an interrupted Grade returned no error")
		}
	case <-time.After(time.Minute):
		t.Fatal("Grade did not return within a minute of being interrupted")
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", server)); err == nil {
		t.Errorf("the server (pid %d) still exists", server)
	}
	for _, pattern := range []string{filepath.Join(root, "grade-work-*"), filepath.Join(os.Getenv("TMPDIR"), "*")} {
		if left, _ := filepath.Glob(pattern); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	}
}

// child returns the pid of a child process of this one whose command is name, or 0.
func child(name string) int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		stat, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(stat)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || s[open+1:end] != name {
			continue
		}
		var pid, ppid int
		var state string
		fmt.Sscanf(s[:open], "%d", &pid)
		fmt.Sscanf(s[end+1:], " %s %d", &state, &ppid)
		if ppid == os.Getpid() {
			return pid
		}
	}
	return 0
}
