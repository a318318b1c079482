package tracing

import (
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The trace lines of an epoll loop (step05). They replace select's wait and ready lines and add one line
// per change to the interest list; every other line (accept, read, write, close, ...) is the same as in
// a select loop, so the same scenario on step04 and step05 differs only in these lines:
//
//	epoll_ctl  ADD c1 IN|RDHUP        the interest list changed: what is now asked for c1
//	epoll_wait interest=3             the loop sleeps; the kernel watches 3 fds for it
//	ready      c1=IN|RDHUP c2=OUT     what epoll_wait returned: the ready list, in the kernel's order

// EpollCtl records an epoll_ctl call: op is unix.EPOLL_CTL_ADD, _MOD or _DEL, events what is asked
// from now on (EPOLLET shows as ET). The recorder counts ADDs and DELs for EpollWait's line. A DEL
// writes no line: the loop's DEL always comes with the close line that says why.
func (r *Recorder) EpollCtl(op, fd int, events uint32) {
	if r == nil {
		return
	}
	switch op {
	case unix.EPOLL_CTL_ADD:
		r.interest++
	case unix.EPOLL_CTL_DEL:
		r.interest--
		return
	}
	rest := ctlOps[op] + " " + r.name(fd)
	if op != unix.EPOLL_CTL_DEL {
		rest += " " + EpollEvents(events)
	}
	r.line("epoll_ctl", rest)
}

var ctlOps = map[int]string{unix.EPOLL_CTL_ADD: "ADD", unix.EPOLL_CTL_MOD: "MOD", unix.EPOLL_CTL_DEL: "DEL"}

// EpollWait is the wait line of an epoll loop. Unlike select, the call passes no list: the interest
// list lives in the kernel, and the line says how many fds it holds (counted from EpollCtl's calls).
func (r *Recorder) EpollWait() {
	if r == nil {
		return
	}
	r.line("epoll_wait", "interest="+strconv.Itoa(r.interest))
}

// EpollReady records what epoll_wait returned, one name=EVENTS per ready fd, in the order the kernel
// gave them. It expects each event's Fd to hold the fd, as the lab's loop registers them.
func (r *Recorder) EpollReady(events []unix.EpollEvent) {
	if r == nil {
		return
	}
	var b strings.Builder
	for i, ev := range events {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(r.name(int(ev.Fd)) + "=" + EpollEvents(ev.Events))
	}
	if len(events) == 0 {
		b.WriteString("(none)")
	}
	r.line("ready", b.String())
}

// epollBits names the event bits in the order they are printed.
var epollBits = []struct {
	bit  uint32
	name string
}{
	{unix.EPOLLIN, "IN"}, {unix.EPOLLPRI, "PRI"}, {unix.EPOLLOUT, "OUT"}, {unix.EPOLLERR, "ERR"},
	{unix.EPOLLHUP, "HUP"}, {unix.EPOLLRDHUP, "RDHUP"}, {unix.EPOLLEXCLUSIVE, "EXCLUSIVE"},
	{unix.EPOLLWAKEUP, "WAKEUP"}, {unix.EPOLLONESHOT, "ONESHOT"}, {unix.EPOLLET, "ET"},
}

// EpollEvents names a set of epoll event bits without the EPOLL prefix: "IN|RDHUP", "OUT", "IN|ET".
// Bits it does not know are shown in hex; no bits at all is "none".
func EpollEvents(events uint32) string {
	var names []string
	for _, b := range epollBits {
		if events&b.bit != 0 {
			names = append(names, b.name)
			events &^= b.bit
		}
	}
	if events != 0 {
		names = append(names, "0x"+strconv.FormatUint(uint64(events), 16))
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "|")
}

// EpollWaitUntil is the wait line of a loop that keeps deadlines (step 07): the wait's timeout is the
// earliest deadline, and the line says whose it is (a client's, or the server's own with fd -1) and
// why, not how long it is, which would change from run to run.
func (r *Recorder) EpollWaitUntil(fd int, why string) {
	if r == nil {
		return
	}
	whose := why
	if fd >= 0 {
		whose = r.name(fd) + " " + why
	}
	r.line("epoll_wait", "interest="+strconv.Itoa(r.interest)+" until "+whose)
}
