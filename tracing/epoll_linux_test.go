package tracing_test

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
)

func TestEpollLines(t *testing.T) {
	var b strings.Builder
	tr := tracing.New(&b, false)
	tr.Listen(3)
	tr.EpollCtl(unix.EPOLL_CTL_ADD, 3, unix.EPOLLIN)
	tr.EpollWait()
	tr.EpollReady([]unix.EpollEvent{{Events: unix.EPOLLIN, Fd: 3}})
	tr.Accept(7)
	tr.EpollCtl(unix.EPOLL_CTL_ADD, 7, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLET)
	tr.EpollCtl(unix.EPOLL_CTL_MOD, 7, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLOUT)
	tr.EpollWait()
	tr.EpollReady([]unix.EpollEvent{{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP, Fd: 7}, {Events: unix.EPOLLIN, Fd: 3}})
	tr.EpollReady(nil)
	tr.EpollCtl(unix.EPOLL_CTL_DEL, 7, 0) // counted, not written: a close line says it
	tr.EpollWait()
	want := `listen     listener
epoll_ctl  ADD listener IN
epoll_wait interest=1
ready      listener=IN
accept     c1
epoll_ctl  ADD c1 IN|RDHUP|ET
epoll_ctl  MOD c1 IN|OUT|RDHUP
epoll_wait interest=2
ready      c1=IN|OUT|RDHUP listener=IN
ready      (none)
epoll_wait interest=1
`
	if d := tracing.Diff(want, b.String()); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
}

func TestEpollEventNames(t *testing.T) {
	for _, c := range []struct {
		events uint32
		want   string
	}{
		{0, "none"},
		{unix.EPOLLIN | unix.EPOLLERR | unix.EPOLLHUP, "IN|ERR|HUP"},
		{unix.EPOLLOUT | 1<<20, "OUT|0x100000"},
	} {
		if got := tracing.EpollEvents(c.events); got != c.want {
			t.Errorf("EpollEvents(%#x) = %q, want %q", c.events, got, c.want)
		}
	}
}

// A nil Recorder records nothing, here too.
func TestEpollNilRecorder(t *testing.T) {
	var tr *tracing.Recorder
	tr.EpollCtl(unix.EPOLL_CTL_ADD, 3, unix.EPOLLIN)
	tr.EpollWait()
	tr.EpollReady([]unix.EpollEvent{{Events: unix.EPOLLIN, Fd: 3}})
}
