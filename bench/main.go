//go:build linux

// Command bench measures the lab's steps against each other, and against what a Go programmer would
// write instead (a goroutine per connection, with net), on this machine, over loopback:
//
//	go run ./bench          the full suite, about half an hour; writes docs/performance.md
//	go run ./bench -smoke   twenty seconds; checks every workload still runs and every byte checks out
//
// It builds each server, runs it as a child process with tracing off, drives it with a load generator
// in this process (load.go), and reads the server's CPU time and memory from /proc. By default the
// server runs on CPUs of its own and the generator on the others (placement.go), and a shorter pass of
// echo and chat follows with both free to run anywhere, to compare. Every figure is
// measured several times, with the servers taken in turn inside each repetition, so that a slow moment
// of the machine falls on all of them alike; the report gives the median and the range.
package main

import (
	"cmp"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A config sizes the suite: the full one for the report, the smoke one for CI.
type config struct {
	name       string
	reps       int           // repetitions of every measurement
	warm       time.Duration // traffic before a measurement window starts
	window     time.Duration // a measurement window
	echoConns  []int
	echoSizes  []int
	scanActive int   // ping-pong connections during the scan
	scanIdle   []int // idle connections held, in increasing order
	scanReps   int
	scanWins   int // windows at each scan level, of which the median counts: one noisy second would decide "flat"
	chat       chatLoad
	chatReps   int
	traceReps  int
	fair       fairLoad
	fairReps   int
	only       map[string]bool // if set, run only these workloads (-workloads)
	placement  string          // pinned or shared (see placement.go)
	shared     *config         // after a pinned pass: a shorter pass of the same servers with placement shared, to compare
}

var full = config{
	name: "full", reps: 7, warm: 200 * time.Millisecond, window: time.Second,
	echoConns: []int{1, 64, 1000}, echoSizes: []int{64, 4096},
	// Three scan repetitions, not five: twelve servers at six levels of three windows each took 23 of
	// a run's minutes with five, and the shared pass needs some of them (issue 22).
	scanActive: 4, scanIdle: []int{0, 100, 500, 1000, 5000, 10000}, scanReps: 3, scanWins: 3,
	chat:     chatLoad{members: 100, senders: 10, lines: 2000, window: 32},
	chatReps: 7, traceReps: 21,
	fair:     fairLoad{members: 20, lines: 30000, floodFor: 3 * time.Second},
	fairReps: 3, placement: pinned,
	// The shared pass repeats only the workloads issue 22 is about, echo at 64 B and the two chats,
	// with three repetitions: all of it again would double a run of half an hour.
	shared: &config{
		name: "full", reps: 3, warm: 200 * time.Millisecond, window: time.Second,
		echoConns: []int{64, 1000}, echoSizes: []int{64},
		chat:     chatLoad{members: 100, senders: 10, lines: 2000, window: 32},
		chatReps: 3, placement: shared, only: map[string]bool{"echo": true, "chat": true},
	},
}

// smoke runs every workload at a small size; 1100 idle connections are enough to see select refuse.
var smoke = config{
	name: "smoke", reps: 1, warm: 20 * time.Millisecond, window: 150 * time.Millisecond,
	echoConns: []int{1, 16}, echoSizes: []int{64, 4096},
	scanActive: 2, scanIdle: []int{0, 100, 1100}, scanReps: 1, scanWins: 1,
	chat:     chatLoad{members: 10, senders: 3, lines: 50, window: 8},
	chatReps: 1, traceReps: 1,
	fair:     fairLoad{members: 4, lines: 2000, floodFor: time.Second},
	fairReps: 1, placement: pinned,
	shared: &config{
		name: "smoke", reps: 1, warm: 20 * time.Millisecond, window: 150 * time.Millisecond,
		echoConns: []int{16}, echoSizes: []int{64},
		chat:     chatLoad{members: 10, senders: 3, lines: 50, window: 8},
		chatReps: 1, placement: shared, only: map[string]bool{"echo": true, "chat": true},
	},
}

func main() {
	smokeMode := flag.Bool("smoke", false, "run every workload briefly, check results, write no report unless -out is given")
	out := flag.String("out", "", "write the report to this file (default: docs/performance.md, or none with -smoke)")
	only := flag.String("servers", "", "measure only the servers whose table name matches this regexp, e.g. 'step05|step06|baseline'")
	source := flag.String("source", "", "what code is measured, for the report (default: the checkout's git commit, and whether the measured packages have uncommitted changes)")
	workloads := flag.String("workloads", "", "run only these workloads, comma-separated: echo,scan,chat,tracing,fairness (default all)")
	flag.StringVar(&profiling.dir, "cpuprofile", "", "write a CPU profile of every server run into this directory (see profile.go); no report unless -out; no shared pass")
	place := flag.String("placement", pinned, "pinned: the server on CPUs of its own, the load generator on the others, then a shorter shared pass of echo and chat to compare; shared: both anywhere, as before issue 22, and no second pass")
	flag.Parse()
	if profiling.dir != "" {
		dir, err := filepath.Abs(profiling.dir)
		if err == nil {
			err = os.MkdirAll(dir, 0o755)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: -cpuprofile: %v\n", err)
			os.Exit(2)
		}
		profiling.dir = dir
	}
	cfg := full
	if *smokeMode {
		cfg = smoke
	}
	switch cfg.placement = *place; {
	case *place == shared || profiling.dir != "":
		cfg.shared = nil
	case *place != pinned:
		fmt.Fprintf(os.Stderr, "bench: -placement %q: want %s or %s\n", *place, pinned, shared)
		os.Exit(2)
	}
	if *workloads != "" {
		cfg.only = map[string]bool{}
		for _, w := range strings.Split(*workloads, ",") {
			cfg.only[strings.TrimSpace(w)] = true
		}
		if cfg.shared != nil {
			sh := *cfg.shared
			sh.only = map[string]bool{}
			for w := range cfg.only {
				sh.only[w] = cfg.shared.only[w]
			}
			cfg.shared = &sh
		}
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: -servers: %v\n", err)
			os.Exit(2)
		}
		servers = slices.DeleteFunc(servers, func(s server) bool { return !re.MatchString(s.name) })
	}
	res, err := runSuite(cfg, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
	if res.source = *source; res.source == "" {
		res.source = describeSource(res.root)
	}
	path := *out
	if path == "" && !*smokeMode && profiling.dir == "" {
		path = filepath.Join(res.root, "docs", "performance.md")
	}
	if path == "" {
		fmt.Fprintf(os.Stderr, "bench: %s run passed; no report written\n", cfg.name)
		return
	}
	if err := os.WriteFile(path, []byte(report(res)), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s\n", path)
}

// results is everything one run measured.
type results struct {
	cfg     config
	root    string
	machine string
	load    [2]string // the load average (/proc/loadavg) when the run started and when it ended
	started time.Time
	took    time.Duration
	source  string   // what code was measured
	missing []string // packages in the server table that are not in this checkout
	placed  placed   // where the pass ran: its placement, and each process's CPUs
	shared  *results // the shorter shared pass after a pinned one, if it ran

	echoNames []string
	echo      map[echoPoint]map[string]*echoCell
	scan      map[string]map[int]*scanCell // server, idle connections
	chatNames []string
	chat      map[string]map[string]*chatCell // chat mode (paced, unpaced), server
	traced    string                          // the step whose tracing cost was measured
	tracing   map[string]sample
	fairNames []string
	fair      map[string][]fairRun
}

type echoPoint struct{ conns, size int }

type echoCell struct {
	rate, p50, p99, cpu sample // msgs/s, µs, µs, µs of server CPU per message
	sleeps              sample // server threads' sleeps per message
	refused             string
}

type scanCell struct {
	cpu, p50, rate sample
	rssPerConn     sample // bytes of RSS per idle connection held
	held, refused  int
	said           string
}

type chatCell struct {
	rate, cpu  sample // lines delivered per second, µs of server CPU per delivered line
	p50, p99   sample // µs from a line's write to its reading by a member
	deliveries int    // in the last repetition, every one checked
	missing    []int  // per repetition: lines that some member never received
}

// runSuite builds the servers and runs every workload, writing progress to log.
func runSuite(cfg config, log io.Writer) (*results, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	res := newResults(cfg)
	res.root, res.machine, res.load = root, machine(), [2]string{loadAverage()}
	if err := raiseFDLimit(); err != nil {
		return nil, err
	}

	// Build every server that exists, in one go build.
	var pkgs []string
	for _, s := range servers {
		if !exists(root, s.pkg) {
			if !slices.Contains(res.missing, s.pkg) {
				res.missing = append(res.missing, s.pkg)
			}
			continue
		}
		if !slices.Contains(pkgs, s.pkg) {
			pkgs = append(pkgs, s.pkg)
		}
	}
	dir, err := os.MkdirTemp("", "muxlab-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(log, "bench: building %s\n", strings.Join(pkgs, " "))
	var replace map[string]string
	if profiling.dir != "" {
		if replace, err = profileOverlay(root, dir, pkgs); err != nil {
			return nil, err
		}
	}
	bins, err := build(root, dir, pkgs, replace)
	if err != nil {
		return nil, err
	}
	var echoes, chats []program
	for _, s := range servers {
		if bin, ok := bins[s.pkg]; ok && s.echo != nil {
			echoes = append(echoes, program{s.name, bin, s.echo})
		}
		if bin, ok := bins[s.pkg]; ok && s.chat != nil {
			chats = append(chats, program{s.name, bin, s.chat})
		}
	}
	for _, p := range echoes {
		res.echoNames = append(res.echoNames, p.name)
	}
	for _, p := range chats {
		res.chatNames = append(res.chatNames, p.name)
	}
	if err := runPass(cfg, res, root, dir, echoes, chats, log); err != nil {
		return nil, err
	}
	if cfg.placement == pinned && cfg.shared != nil && len(cfg.shared.only) > 0 {
		sh := newResults(*cfg.shared)
		sh.echoNames, sh.chatNames = res.echoNames, res.chatNames
		if err := runPass(*cfg.shared, sh, root, dir, echoes, chats, log); err != nil {
			return nil, fmt.Errorf("shared pass: %w", err)
		}
		res.shared = sh
	}
	res.took = time.Since(res.started)
	res.load[1] = loadAverage()
	return res, nil
}

func newResults(cfg config) *results {
	return &results{cfg: cfg, started: time.Now(),
		echo: map[echoPoint]map[string]*echoCell{}, scan: map[string]map[int]*scanCell{},
		chat: map[string]map[string]*chatCell{}, tracing: map[string]sample{}, fair: map[string][]fairRun{}}
}

// runPass runs cfg's workloads with cfg's placement.
func runPass(cfg config, res *results, root, dir string, echoes, chats []program, log io.Writer) error {
	undo, err := place(cfg.placement)
	if err != nil {
		return err
	}
	defer undo()
	fmt.Fprintf(log, "bench: placement %s: generator on CPUs %s, servers on CPUs %s\n", cfg.placement, cpuList(placement.generator), cpuList(placement.server))
	workloads := []struct {
		name string
		run  func() error
	}{
		{"echo", func() error { return runEcho(cfg, res, echoes, log) }},
		{"scan", func() error { return runScan(cfg, res, echoes, log) }},
		{"chat", func() error { return runChat(cfg, res, chats, log) }},
		{"tracing", func() error { return runTracing(cfg, res, root, dir, echoes, log) }},
		{"fairness", func() error { return runFairness(cfg, res, fairPrograms(chats), log) }},
	}
	for _, w := range workloads {
		if cfg.only != nil && !cfg.only[w.name] {
			continue
		}
		profiling.workload = w.name
		if err := w.run(); err != nil {
			return fmt.Errorf("%s: %w", w.name, err)
		}
	}
	res.placed = recordPlacement()
	return nil
}

// describeSource names the code measured: the commit, and whether the servers' packages or the
// tracing package have changes not committed.
func describeSource(root string) string {
	git := func(args ...string) (string, error) {
		out, err := exec.Command("git", append([]string{"-C", root}, args...)...).Output()
		return strings.TrimSpace(string(out)), err
	}
	commit, err := git("rev-parse", "--short", "HEAD")
	if err != nil {
		return "not a git checkout"
	}
	paths := []string{"status", "--porcelain", "--", "tracing", "bench"}
	for _, s := range servers {
		paths = append(paths, strings.TrimPrefix(s.pkg, "./"))
	}
	if dirty, err := git(paths...); err != nil || dirty != "" {
		return "commit " + commit + ", with uncommitted changes"
	}
	return "commit " + commit
}

// raiseFDLimit lifts the soft RLIMIT_NOFILE to the hard one: 10,000 idle connections take 10,000 fds
// here and as many in the server, which inherits the limit.
func raiseFDLimit() error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	lim.Cur = lim.Max
	return unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
}

// machine describes where the figures come from.
func machine() string {
	var u unix.Utsname
	unix.Uname(&u)
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d cores (%s), Linux %s, %s %s/%s", runtime.NumCPU(), model,
		unix.ByteSliceToString(u.Release[:]), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// loadAverage is how busy the machine was over the last 1, 5 and 15 minutes (runnable threads, all
// processes): above the number of cores, something besides the bench competed for them.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// turn returns progs rotated by rep: each repetition starts with a different server.
func turn(progs []program, rep int) []program {
	if len(progs) == 0 {
		return nil
	}
	k := rep % len(progs)
	return append(slices.Clone(progs[k:]), progs[:k]...)
}

// runEcho measures ping-pong at every connection count and message size, each run on a fresh server.
func runEcho(cfg config, res *results, progs []program, log io.Writer) error {
	for rep := range cfg.reps {
		for _, conns := range cfg.echoConns {
			for _, size := range cfg.echoSizes {
				pt := echoPoint{conns, size}
				if res.echo[pt] == nil {
					res.echo[pt] = map[string]*echoCell{}
				}
				for _, p := range turn(progs, rep) {
					cell := res.echo[pt][p.name]
					if cell == nil {
						cell = &echoCell{}
						res.echo[pt][p.name] = cell
					}
					run, refused, err := echoOnce(p, conns, size, cfg.warm, cfg.window)
					if err != nil {
						return fmt.Errorf("%s, %d connections × %d B: %w", p.name, conns, size, err)
					}
					if refused != "" {
						cell.refused = refused
						continue
					}
					cell.rate = append(cell.rate, run.rate())
					cell.p50 = append(cell.p50, us(run.rtt(0.50)))
					cell.p99 = append(cell.p99, us(run.rtt(0.99)))
					cell.cpu = append(cell.cpu, run.cpuPerMsg())
					cell.sleeps = append(cell.sleeps, run.sleepsPerMsg())
					fmt.Fprintf(log, "echo rep %d/%d %4d conns %4d B  %-20s %8.0f msg/s  p50 %6.1f µs  cpu %5.2f µs/msg  sleeps %.3f/msg\n",
						rep+1, cfg.reps, conns, size, p.name, run.rate(), us(run.rtt(0.5)), run.cpuPerMsg(), run.sleepsPerMsg())
				}
			}
		}
	}
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// echoOnce starts p, opens conns connections and measures one window of ping-pong.
func echoOnce(p program, conns, size int, warm, window time.Duration) (echoRun, string, error) {
	srv, err := start(p)
	if err != nil {
		return echoRun{}, "", err
	}
	var o openResult
	// Stop the server first: then its side of each connection closes first and keeps the TIME_WAIT,
	// and the generator's ephemeral ports are free again at once.
	defer func() { srv.stop(); closeAll(o.held) }()
	o, err = open(srv.addr, conns)
	if err != nil {
		return echoRun{}, "", err
	}
	if o.refused > 0 {
		return echoRun{}, fmt.Sprintf("refused %d of %d connections", o.refused, conns), nil
	}
	run, err := pingPong(o.held, size, warm, window, srv)
	return run, "", err
}

// runScan holds more and more idle connections while a few active ones ping-pong, on one server per
// repetition: the cost of a message should not depend on how many clients are doing nothing, and for
// select it does. After each window it reads the server's RSS: the growth from the window with no idle
// connection, divided by their number, is the memory an idle connection costs.
func runScan(cfg config, res *results, progs []program, log io.Writer) error {
	for rep := range cfg.scanReps {
		for _, p := range turn(progs, rep) {
			if res.scan[p.name] == nil {
				res.scan[p.name] = map[int]*scanCell{}
			}
			if err := scanOnce(cfg, p, res.scan[p.name], log); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
		}
	}
	return nil
}

func scanOnce(cfg config, p program, cells map[int]*scanCell, log io.Writer) error {
	srv, err := start(p)
	if err != nil {
		return err
	}
	var active openResult
	var idle []int
	defer func() { srv.stop(); closeAll(active.held); closeAll(idle) }() // server first, as in echoOnce
	active, err = open(srv.addr, cfg.scanActive)
	if err != nil {
		return err
	}
	if active.refused > 0 {
		return fmt.Errorf("refused %d of the %d active connections", active.refused, cfg.scanActive)
	}
	var rss0 int64 // after the first window, with no idle connections: the runtime has warmed up
	for _, level := range cfg.scanIdle {
		cell := cells[level]
		if cell == nil {
			cell = &scanCell{}
			cells[level] = cell
		}
		o, err := open(srv.addr, level-len(idle))
		if err != nil {
			return fmt.Errorf("opening %d idle connections: %w", level, err)
		}
		idle = append(idle, o.held...)
		if o.refused > 0 {
			// select cannot watch fds past FD_SETSIZE: this level, and every one above it, is refused.
			cell.held, cell.refused, cell.said = len(idle), level-len(idle), o.said
			fmt.Fprintf(log, "scan %-20s %5d idle: refused %d (%q)\n", p.name, level, cell.refused, o.said)
			return nil
		}
		var runs []echoRun
		for range max(cfg.scanWins, 1) {
			run, err := pingPong(active.held, 64, cfg.warm, cfg.window, srv)
			if err != nil {
				return fmt.Errorf("%d idle: %w", level, err)
			}
			runs = append(runs, run)
		}
		slices.SortFunc(runs, func(a, b echoRun) int { return cmp.Compare(a.cpuPerMsg(), b.cpuPerMsg()) })
		run := runs[len(runs)/2] // the window with the median CPU per message
		rss, err := srv.rss()
		if err != nil {
			return err
		}
		if level == 0 {
			rss0 = rss
		} else if rss0 > 0 {
			cell.rssPerConn = append(cell.rssPerConn, float64(rss-rss0)/float64(level))
		}
		cell.held = level
		cell.cpu = append(cell.cpu, run.cpuPerMsg())
		cell.p50 = append(cell.p50, us(run.rtt(0.5)))
		cell.rate = append(cell.rate, run.rate())
		fmt.Fprintf(log, "scan %-20s %5d idle: %8.0f msg/s  p50 %6.1f µs  cpu %6.2f µs/msg  rss +%d B\n",
			p.name, level, run.rate(), us(run.rtt(0.5)), run.cpuPerMsg(), rss-rss0)
	}
	return nil
}

// tracingSubjects is where the tracing cost is measured: the first of these that exists.
var tracingSubjects = []string{"step05 epoll LT", "step03 select", "step02 select"}

// runTracing runs one step with -trace=false against the same step built with tracing compiled out
// (noop.go), at 64 connections × 64 B, where the loop does the most trace calls per byte.
func runTracing(cfg config, res *results, root, dir string, progs []program, log io.Writer) error {
	var off program
	for _, name := range tracingSubjects {
		if i := slices.IndexFunc(progs, func(p program) bool { return p.name == name }); i >= 0 {
			off = progs[i]
			break
		}
	}
	if off.bin == "" {
		return nil
	}
	pkg := ""
	for _, s := range servers {
		if s.name == off.name {
			pkg = s.pkg
		}
	}
	odir := filepath.Join(dir, "notrace")
	if err := os.Mkdir(odir, 0o755); err != nil {
		return err
	}
	replace, err := noTracingOverlay(root, odir)
	if err != nil {
		return err
	}
	if profiling.dir != "" {
		more, err := profileOverlay(root, odir, []string{pkg})
		if err != nil {
			return err
		}
		maps.Copy(replace, more)
	}
	bins, err := build(root, odir, []string{pkg}, replace)
	if err != nil {
		return err
	}
	res.traced = off.name
	off.name = "tracing off (-trace=false)"
	out := program{"tracing compiled out", bins[pkg], off.args}
	for rep := range cfg.traceReps {
		for _, p := range turn([]program{off, out}, rep) {
			run, refused, err := echoOnce(p, 64, 64, cfg.warm, cfg.window)
			if err == nil && refused != "" {
				err = fmt.Errorf("%s", refused)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			res.tracing[p.name] = append(res.tracing[p.name], run.cpuPerMsg())
			fmt.Fprintf(log, "tracing rep %d/%d %-28s cpu %5.2f µs/msg\n", rep+1, cfg.traceReps, p.name, run.cpuPerMsg())
		}
	}
	return nil
}
