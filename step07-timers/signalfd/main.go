//go:build linux

// Command signalfd measures why step07 takes its signals through a pipe and not a signalfd.
//
// A C server blocks SIGTERM in main before it starts any thread: every thread inherits the mask, no
// thread can take the signal, and it waits, pending, until the server reads it from a signalfd. A Go
// program cannot block it everywhere. The runtime starts its threads itself, and each one unblocks
// the signals whose default is to end the process (SIGHUP, SIGINT, SIGTERM; see blockableSig in the
// runtime), whatever mask the program began with. So a signal blocked on one thread can be taken by
// another. This command blocks SIGTERM on one locked thread, the main one, opens a signalfd for it
// there, has SIGTERM sent -n times, one at a time, and counts where each one arrived: on the
// signalfd, or on another thread, whose handler (the runtime's) passed it to signal.Notify.
//
//	go run ./step07-timers/signalfd -send outside   kill(2) from another process, as kill(1) or a service manager sends it
//	go run ./step07-timers/signalfd -send kill      kill(2) from the blocking thread: to the process
//	go run ./step07-timers/signalfd -send tgkill    tgkill(2) from the blocking thread: to that thread alone
//
// A signal sent to the process may go to any thread that does not block it; one sent to a thread
// waits for that thread.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The main goroutine stays on the main thread, which is the first one the kernel considers for a
// signal sent to the process: LockOSThread in init is how a Go program keeps main there.
func init() { runtime.LockOSThread() }

func main() {
	n := flag.Int("n", 1000, "how many SIGTERMs to send, one at a time")
	how := flag.String("send", "outside", "who sends each signal, and to whom: outside (another process, to this one), kill (this thread, to this process) or tgkill (this thread, to itself)")
	notify := flag.Bool("notify", true, "catch escaped signals with signal.Notify; without it, the first one ends the process (exit status 143)")
	blocked := flag.Int("blocked", 4, "goroutines that sit in a blocking read, each holding a thread of its own, as a server's can")
	flag.Parse()
	if *n < 1 || *blocked < 0 {
		fmt.Fprintf(os.Stderr, "signalfd: want -n (%d) of at least 1 and -blocked (%d) >= 0\n", *n, *blocked)
		os.Exit(2)
	}

	// Without Notify, a SIGTERM that reaches a thread which does not block it ends the process (the
	// runtime's handler does what the default action would); with it, the handler sends it here.
	escaped := make(chan os.Signal, 1)
	if *notify {
		signal.Notify(escaped, unix.SIGTERM)
	}
	// The loop below waits on fds, so each escaped signal also becomes a byte on a pipe.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		fail("pipe2", err)
	}
	go func() {
		for range escaped {
			unix.Write(p[1], []byte{1})
		}
	}()

	for range *blocked {
		var q [2]int
		if err := unix.Pipe2(q[:], unix.O_CLOEXEC); err != nil {
			fail("pipe2", err)
		}
		go unix.Read(q[0], make([]byte, 1)) // nothing is ever written: the read holds its thread
	}

	var set unix.Sigset_t
	addSignal(&set, unix.SIGTERM)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, nil); err != nil {
		fail("pthread_sigmask", err)
	}
	sfd, err := unix.Signalfd(-1, &set, unix.SFD_NONBLOCK|unix.SFD_CLOEXEC)
	if err != nil {
		fail("signalfd", err)
	}

	pid, tid := unix.Getpid(), unix.Gettid()
	var send func() error
	switch *how {
	case "kill":
		send = func() error { return unix.Kill(pid, unix.SIGTERM) }
	case "tgkill":
		send = func() error { return unix.Tgkill(pid, tid, unix.SIGTERM) }
	case "outside":
		// One shell sends them all (its kill is a builtin), one for each line it reads.
		sh := exec.Command("sh", "-c", "while read _; do kill -TERM "+strconv.Itoa(pid)+"; done")
		lines, err := sh.StdinPipe()
		if err == nil {
			err = sh.Start()
		}
		if err != nil {
			fail("sh", err)
		}
		defer sh.Wait()
		defer lines.Close()
		send = func() error { _, err := lines.Write([]byte("\n")); return err }
	default:
		fmt.Fprintf(os.Stderr, "signalfd: -send %q: want outside, kill or tgkill\n", *how)
		os.Exit(2)
	}
	onFD, away := 0, 0
	for range *n {
		if err := send(); err != nil {
			fail(*how, err)
		}
		if arrivedOnFD(sfd, p[0]) {
			onFD++
		} else {
			away++
		}
	}
	fmt.Printf("%s, %d threads, %d SIGTERMs: %d on the signalfd, %d escaped to another thread (%.1f%%)\n",
		*how, threads(), *n, onFD, away, 100*float64(away)/float64(*n))
}

// arrivedOnFD waits until the signal just sent has arrived, on the signalfd (true) or on the pipe
// from the Notify channel (false), and consumes it. Each signal arrives exactly once, on one of them.
func arrivedOnFD(sfd, pipe int) bool {
	for {
		fds := []unix.PollFd{{Fd: int32(sfd), Events: unix.POLLIN}, {Fd: int32(pipe), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err == unix.EINTR {
			continue // the runtime's preemption signal: ask again
		} else if err != nil {
			fail("poll", err)
		}
		if fds[0].Revents&unix.POLLIN != 0 {
			// The signalfd's poll counts the process's pending signals too, which a thread that was
			// woken for this one may take first: then this read finds nothing, and the pipe will have it.
			var si unix.SignalfdSiginfo
			if n, _ := unix.Read(sfd, (*[unsafe.Sizeof(si)]byte)(unsafe.Pointer(&si))[:]); n > 0 {
				if unix.Signal(si.Signo) != unix.SIGTERM {
					fail("signalfd", fmt.Errorf("read signal %d, want SIGTERM", si.Signo))
				}
				return true
			}
		}
		if fds[1].Revents&unix.POLLIN != 0 {
			unix.Read(pipe, make([]byte, 1))
			return false
		}
	}
}

// addSignal adds sig to set, as sigaddset(3) does: signal s is bit s-1.
func addSignal(set *unix.Sigset_t, sig unix.Signal) {
	const bits = uint(8 * unsafe.Sizeof(set.Val[0])) // 64 or 32: the width of C's unsigned long
	i := uint(sig - 1)
	set.Val[i/bits] |= 1 << (i % bits)
}

// threads counts this process's threads: the ones a signal sent to the process could go to.
func threads() int {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return -1
	}
	return len(tasks)
}

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "signalfd: %s: %v\n", what, err)
	os.Exit(1)
}
