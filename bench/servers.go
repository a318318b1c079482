//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A server is one program under test, and the flags that put it in each mode. A nil mode is one the
// program does not have. Adding a step to the bench is one line here.
type server struct {
	name string   // as the tables show it
	pkg  string   // the package to build, relative to the module's root
	echo []string // flags for an echo server
	chat []string // flags for a chat room
}

// servers is every program the bench knows. One whose package does not exist yet is left out of the
// run, and the report says so.
var servers = []server{
	{name: "step02 select", pkg: "./step02-select-echo", echo: []string{"-trace=false"}},
	{name: "step03 select", pkg: "./step03-write-queues", echo: []string{"-trace=false"}},
	{name: "step04 select", pkg: "./step04-chat", chat: []string{"-trace=false"}},
	{name: "step05 epoll LT", pkg: "./step05-epoll", echo: []string{"-trace=false", "-echo"}, chat: []string{"-trace=false"}},
	{name: "step06 epoll ET", pkg: "./step06-edge-triggered", echo: []string{"-trace=false", "-echo"}, chat: []string{"-trace=false"}},
	{name: "step07 timers", pkg: "./step07-timers", echo: []string{"-trace=false", "-echo"}, chat: []string{"-trace=false"}},
	{name: "step08 io_uring", pkg: "./step08-io-uring", echo: []string{"-trace=false", "-echo"}, chat: []string{"-trace=false"}},
	{name: "step09 1 loop", pkg: "./step09-multicore", echo: []string{"-trace=false", "-echo", "-loops=1"}, chat: []string{"-trace=false", "-loops=1"}},
	{name: "step09 2 loops", pkg: "./step09-multicore", echo: []string{"-trace=false", "-echo", "-loops=2"}, chat: []string{"-trace=false", "-loops=2"}},
	{name: "step09 4 loops", pkg: "./step09-multicore", chat: []string{"-trace=false", "-loops=4"}}, // the exactly-once check with 4 loops
	{name: "step09 2 loops reuseport", pkg: "./step09-multicore", echo: []string{"-trace=false", "-echo", "-loops=2", "-reuseport"}, chat: []string{"-trace=false", "-loops=2", "-reuseport"}},
	{name: "step10 goroutines", pkg: "./step10-goroutines", echo: []string{"-trace=false", "-echo"}, chat: []string{"-trace=false"}},
	{name: "baseline goroutines", pkg: "./bench/baseline/echo", echo: []string{}},
	{name: "baseline goroutines", pkg: "./bench/baseline/chat", chat: []string{}},
}

// A program is a server ready to run in one mode: a built binary and its flags.
type program struct {
	name string
	bin  string
	args []string
}

// moduleRoot is the directory holding go.mod: packages are built, and the report written, from there.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the muxlab module: run the bench from the repository")
	}
	return filepath.Dir(gomod), nil
}

// build compiles pkgs (package paths such as ./step05-epoll) into dir with one go build, which builds
// them in parallel, and returns each package's binary. replace, if not empty, is a go build -overlay:
// it maps a file's path to the path of the text to compile in its place (or to add, if it does not
// exist), so a variant is built without touching anyone's source.
func build(root, dir string, pkgs []string, replace map[string]string) (map[string]string, error) {
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if len(replace) > 0 {
		data, err := json.Marshal(map[string]any{"Replace": replace})
		if err != nil {
			return nil, err
		}
		overlay := filepath.Join(dir, "overlay.json")
		if err := os.WriteFile(overlay, data, 0o644); err != nil {
			return nil, err
		}
		args = append(args, "-overlay", overlay)
	}
	cmd := exec.Command("go", append(args, pkgs...)...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, out)
	}
	bins := map[string]string{}
	for _, p := range pkgs {
		bins[p] = filepath.Join(dir, filepath.Base(p))
	}
	return bins, nil
}

// exists reports whether the package pkg is in the checkout: a directory with Go files.
func exists(root, pkg string) bool {
	files, _ := filepath.Glob(filepath.Join(root, pkg, "*.go"))
	return len(files) > 0
}

// A child is a running server.
type child struct {
	name   string
	addr   string // from its "listening on ADDR" line
	cmd    *exec.Cmd
	stderr *tail
	done   chan struct{} // closed when it has exited
}

var listening = regexp.MustCompile(`listening on (\S+)`)

// start runs p on a free loopback port and waits (at most 10 s) for its "listening on" line. The trace,
// if the program writes one, goes nowhere: the bench runs every step with -trace=false.
func start(p program) (*child, error) {
	c := &child{name: p.name, stderr: &tail{}, done: make(chan struct{})}
	c.cmd = exec.Command(p.bin, append(append([]string{}, p.args...), "-addr", "127.0.0.1:0")...)
	if env := profileEnvFor(p.name); env != "" {
		c.cmd.Env = append(os.Environ(), env)
	}
	r, err := c.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := startPlaced(c.cmd.Start); err != nil {
		return nil, err
	}
	addr := make(chan string, 1)
	go func() {
		// Read stderr to the end, so that the child never blocks writing to it.
		s := bufio.NewScanner(r)
		for s.Scan() {
			c.stderr.add(s.Text())
			if m := listening.FindStringSubmatch(s.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, r)
		c.cmd.Wait()
		close(c.done)
	}()
	select {
	case c.addr = <-addr:
		noteServer(p.name, c.cmd.Process.Pid) // listening: its threads are there by now
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("%s exited before listening: %s", p.name, c.stderr)
	case <-time.After(10 * time.Second):
		c.stop()
		return nil, fmt.Errorf("%s did not say where it listens within 10 s: %s", p.name, c.stderr)
	}
}

// alive reports an error if the server has exited (it must not, while the bench drives it).
func (c *child) alive() error {
	select {
	case <-c.done:
		return fmt.Errorf("%s exited (%v): %s", c.name, c.cmd.ProcessState, c.stderr)
	default:
		return nil
	}
}

// stop kills the server and waits for it to go. Stopping a stopped server does nothing.
func (c *child) stop() {
	if c.cmd.Env != nil && c.stopProfiled() {
		return
	}
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100 on every Linux the lab runs on.
const clockTick = 10 * time.Millisecond

// cpu is the CPU time the server has used so far, user plus system, all threads. It is the sum of the
// first field of /proc/PID/task/TID/schedstat, the scheduler's own count in nanoseconds; utime+stime
// in /proc/PID/stat is the same total rounded down to 10 ms ticks, too coarse for a window of a second.
// (A thread that exits takes its time with it; the servers' threads live as long as they do.)
func (c *child) cpu() (time.Duration, error) {
	pid := c.cmd.Process.Pid
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread has just exited
		}
		if err != nil {
			return c.cpuTicks() // no schedstat in this kernel
		}
		f := strings.Fields(string(data))
		if len(f) == 0 {
			return 0, fmt.Errorf("/proc/%d/task/%s/schedstat is empty", pid, t.Name())
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/task/%s/schedstat: %v", pid, t.Name(), err)
		}
		total += time.Duration(ns)
	}
	return total, nil
}

// cpuTicks is the server's CPU time from fields 14 and 15 of /proc/PID/stat (utime, stime), in ticks.
func (c *child) cpuTicks() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", c.cmd.Process.Pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", c.cmd.Process.Pid)
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// rss is the server's resident set size in bytes, from VmRSS in /proc/PID/status.
func (c *child) rss() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", c.cmd.Process.Pid)
}

// tail keeps the last lines a server wrote to stderr, for error messages.
type tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lines = append(t.lines, line); len(t.lines) > 10 {
		t.lines = t.lines[1:]
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return "(nothing on stderr)"
	}
	return strings.Join(t.lines, " | ")
}

// sleeps is how many times the server's threads have gone to sleep so far: the sum of
// voluntary_ctxt_switches over /proc/PID/task/*/status. Each one is a wake-up to pay for later, and
// with the server and the load generator on different cores a wake-up costs an interrupt across them.
func (c *child) sleeps() int {
	pid := c.cmd.Process.Pid
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	total := 0
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread has just exited
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				total += n
			}
		}
	}
	return total
}
