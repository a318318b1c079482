//go:build linux

package main

// Placement: which CPUs the server and the load generator run on. Pinned, each has CPUs of its own, as
// if on two machines: the generator's work never lands on the server's core, and the server's CPU
// time per message is not inflated by sharing caches and run queues with the generator. Shared, both
// may run anywhere, as the bench did before issue 22; the kernel then migrates them back and forth.

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	pinned = "pinned"
	shared = "shared"
)

// placement is the current pass's: set by runSuite, read by start for every server it runs.
var placement struct {
	name       string
	all        unix.CPUSet // the bench's own CPUs when it started: restored after a pinned pass
	generator  unix.CPUSet
	server     unix.CPUSet
	maxprocs   int // the generator's GOMAXPROCS before a pinned pass
	mu         sync.Mutex
	serverSeen map[string]string // server name: the Cpus_allowed_list of its threads, as /proc showed them
}

// splitCPUs divides the allowed CPUs in two: the lower half for the generator, the upper half for
// the server (CPU 0 and CPU 1 on a 2-core machine). It fails with fewer than two CPUs.
func splitCPUs(all unix.CPUSet) (gen, srv unix.CPUSet, err error) {
	var cpus []int
	for i := range len(all) * 64 {
		if all.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) < 2 {
		return gen, srv, fmt.Errorf("-placement pinned needs at least 2 CPUs, and this process may run on %d", len(cpus))
	}
	for i, cpu := range cpus {
		if i < len(cpus)/2 {
			gen.Set(cpu)
		} else {
			srv.Set(cpu)
		}
	}
	return gen, srv, nil
}

// place sets up a pass's placement: pinned pins every thread of this process to the generator's CPUs
// and sets GOMAXPROCS to their number (the generator is one hot thread; more Ps than CPUs would only
// let the runtime's other goroutines preempt it). It returns the function that undoes it.
func place(name string) (undo func(), err error) {
	placement.name, placement.serverSeen = name, map[string]string{}
	if err := unix.SchedGetaffinity(0, &placement.all); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	if name == shared {
		placement.generator, placement.server = placement.all, placement.all
		return func() {}, nil
	}
	if name != pinned {
		return nil, fmt.Errorf("-placement %q: want %s or %s", name, pinned, shared)
	}
	if placement.generator, placement.server, err = splitCPUs(placement.all); err != nil {
		return nil, err
	}
	placement.maxprocs = runtime.GOMAXPROCS(placement.generator.Count())
	if err := pinThreads(placement.generator); err != nil {
		return nil, err
	}
	return func() {
		runtime.GOMAXPROCS(placement.maxprocs)
		pinThreads(placement.all)
	}, nil
}

// pinThreads sets the affinity of every thread of this process: sched_setaffinity applies to one
// thread, and a Go program has several. A thread created later inherits the mask of the thread that
// creates it, so pinning them all once covers the threads to come; start calls it again after each
// server starts, in case one appeared in between.
func pinThreads(set unix.CPUSet) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH { // ESRCH: it has just exited
			return fmt.Errorf("sched_setaffinity(%d): %w", tid, err)
		}
	}
	return nil
}

// startPlaced starts cmd with the server's CPUs: from a locked thread whose own mask is the server's
// for the moment of the fork, so the child, and every thread it ever makes, inherits that mask (the
// runtime makes new threads from an unlocked thread, never from this one while it is locked).
func startPlaced(start func() error) error {
	if placement.name != pinned {
		return start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.SchedSetaffinity(0, &placement.server); err != nil {
		return fmt.Errorf("sched_setaffinity: %w", err)
	}
	err := start()
	if perr := unix.SchedSetaffinity(0, &placement.generator); err == nil && perr != nil {
		err = fmt.Errorf("sched_setaffinity: %w", perr)
	}
	if perr := pinThreads(placement.generator); err == nil {
		err = perr
	}
	return err
}

// cpusAllowed is the Cpus_allowed_list of each thread of process pid, the distinct values joined
// by " / ": one value when every thread has the same mask.
func cpusAllowed(pid string) string {
	tasks, _ := os.ReadDir("/proc/" + pid + "/task")
	var lists []string
	for _, t := range tasks {
		data, err := os.ReadFile("/proc/" + pid + "/task/" + t.Name() + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok && !slices.Contains(lists, strings.TrimSpace(v)) {
				lists = append(lists, strings.TrimSpace(v))
			}
		}
	}
	if len(lists) == 0 {
		return "unknown"
	}
	slices.Sort(lists)
	return strings.Join(lists, " / ")
}

// noteServer records the CPUs a server's threads may run on, once per server name.
func noteServer(name string, pid int) {
	placement.mu.Lock()
	defer placement.mu.Unlock()
	if placement.serverSeen == nil {
		placement.serverSeen = map[string]string{}
	}
	if _, ok := placement.serverSeen[name]; !ok {
		placement.serverSeen[name] = cpusAllowed(strconv.Itoa(pid))
	}
}

// countCPUs is how many CPUs a Cpus_allowed_list such as "0-1,3" names: what runtime.NumCPU returns
// in a process started with that mask (the runtime reads sched_getaffinity once, at start).
func countCPUs(list string) int {
	n := 0
	for _, part := range strings.Split(list, ",") {
		lo, hi, ok := strings.Cut(strings.TrimSpace(part), "-")
		a, err1 := strconv.Atoi(lo)
		b, err2 := a, error(nil)
		if ok {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil {
			return 0
		}
		n += b - a + 1
	}
	return n
}

// A placed records one pass's placement for the report.
type placed struct {
	name      string
	generator string            // this process's Cpus_allowed_list during the pass, every thread
	servers   map[string]string // each server's, every thread
	maxprocs  int               // the generator's GOMAXPROCS during the pass
	genSet    unix.CPUSet       // the CPUs the pass gave the generator
	srvSet    unix.CPUSet       // and the servers
}

// recordPlacement reads back what the pass ran on.
func recordPlacement() placed {
	placement.mu.Lock()
	defer placement.mu.Unlock()
	return placed{name: placement.name, generator: cpusAllowed("self"), servers: placement.serverSeen, maxprocs: runtime.GOMAXPROCS(0),
		genSet: placement.generator, srvSet: placement.server}
}

// cpuList shows a CPU set as a list of CPU numbers, "0" or "0,1".
func cpuList(set unix.CPUSet) string {
	var cpus []string
	for i := range len(set) * 64 {
		if set.IsSet(i) {
			cpus = append(cpus, strconv.Itoa(i))
		}
	}
	return strings.Join(cpus, ",")
}

// cpuRange shows a CPU set as the kernel's Cpus_allowed_list does for a run of CPUs: "0-1".
func cpuRange(set unix.CPUSet) string {
	l := strings.Split(cpuList(set), ",")
	if len(l) < 2 {
		return cpuList(set)
	}
	return l[0] + "-" + l[len(l)-1]
}
