//go:build linux

package main

// A small io_uring: the two rings shared with the kernel, and the two system calls that set them up
// and drive them. No library: x/sys/unix has the system call numbers and nothing else, so every
// constant and struct below is the kernel's, named as in include/uapi/linux/io_uring.h and described
// in io_uring(7), io_uring_setup(2) and io_uring_enter(2).
//
// The submission queue (SQ) carries requests to the kernel, the completion queue (CQ) carries results
// back. Each ring is an array and two indexes that only grow (they wrap at 2^32; an entry's slot is
// index & mask). Each index has one writer:
//
//	SQ tail: we write it (a new request is ready)     SQ head: the kernel writes it (it took the request)
//	CQ tail: the kernel writes it (a result is ready)  CQ head: we write it (we have read the result)
//
// Whoever writes an index stores it atomically after filling the entries; whoever reads it loads it
// atomically before reading them. sync/atomic's loads and stores are sequentially consistent, which is
// more than the acquire/release the kernel asks for (io_uring(7), "Memory ordering").

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Opcodes (enum io_uring_op): what a submission asks for.
const (
	IORING_OP_POLL_ADD        = 6
	IORING_OP_TIMEOUT         = 11
	IORING_OP_ACCEPT          = 13
	IORING_OP_ASYNC_CANCEL    = 14
	IORING_OP_CLOSE           = 19
	IORING_OP_READ            = 22
	IORING_OP_SEND            = 26
	IORING_OP_RECV            = 27
	IORING_OP_PROVIDE_BUFFERS = 31
)

// Flags and bits of io_uring.h that this ring uses.
const (
	IOSQE_BUFFER_SELECT = 1 << 5 // sqe.flags: the kernel picks a buffer from group sqe.buf_group when data arrives

	IORING_SETUP_CQSIZE        = 1 << 3  // io_uring_params.cq_entries says how big the CQ is
	IORING_SETUP_SINGLE_ISSUER = 1 << 12 // one thread submits: the kernel can skip some locking
	IORING_SETUP_DEFER_TASKRUN = 1 << 13 // finish completions only when we wait for them: fewer interruptions
	IORING_FEAT_SINGLE_MMAP    = 1 << 0  // features: the SQ ring and the CQ ring share one mapping
	IORING_ENTER_GETEVENTS     = 1 << 0  // io_uring_enter: wait for min_complete completions
	IORING_OFF_SQ_RING         = 0       // mmap offsets: the rings' heads, tails and arrays
	IORING_OFF_SQES            = 0x10000000
	IORING_CQE_F_BUFFER        = 1 << 0 // cqe.flags: a provided buffer was used; its id is flags >> 16
	IORING_CQE_F_MORE          = 1 << 1 // cqe.flags: a multishot request goes on and will complete again
	IORING_CQE_BUFFER_SHIFT    = 16
	IORING_ACCEPT_MULTISHOT    = 1 << 0 // sqe.ioprio of an accept: one submission, a completion per client
	IOSQE_CQE_SKIP_SUCCESS     = 1 << 6 // sqe.flags: post a completion only if the request fails
)

// io_uring_params is what io_uring_setup reads and fills in: sizes, flags, and where each field of the
// rings lies in the mapping (the offsets let the kernel change the layout without breaking programs).
type io_uring_params struct {
	sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd uint32
	resv                                                                          [3]uint32
	sq_off                                                                        io_sqring_offsets
	cq_off                                                                        io_cqring_offsets
}

type io_sqring_offsets struct {
	head, tail, ring_mask, ring_entries, flags, dropped, array, resv1 uint32
	user_addr                                                         uint64
}

type io_cqring_offsets struct {
	head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1 uint32
	user_addr                                                         uint64
}

// io_uring_sqe is one request, 64 bytes. The kernel's unions are named here by what this ring puts in
// them: off (also addr2), op_flags (msg_flags, accept_flags, timeout_flags, cancel_flags), buf_group
// (also buf_index).
type io_uring_sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	op_flags    uint32
	user_data   uint64
	buf_group   uint16
	personality uint16
	file_index  uint32
	addr3       uint64
	_           uint64
}

// io_uring_cqe is one result, 16 bytes: the request's user_data, what the call returned (or -errno),
// and flags.
type io_uring_cqe struct {
	user_data uint64
	res       int32
	flags     uint32
}

// ring is one io_uring instance: its fd and the mapped rings.
type ring struct {
	fd int

	sqHead, sqTail *uint32 // in the mapping; see the table at the top for who writes which
	sqMask         uint32
	sqArray        []uint32 // sqArray[i]: which SQE slot the i-th submission uses (here always slot i)
	sqes           []io_uring_sqe
	tail           uint32 // our copy of the SQ tail: entries up to it are filled; enter publishes it
	queued         uint32 // SQEs filled since the last io_uring_enter: its to_submit

	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []io_uring_cqe

	rings, sqeMem []byte // the two mappings, for munmap
}

// errUnavailable wraps the errors that mean this kernel or this container will not give us a ring.
var errUnavailable = errors.New("io_uring is not available here")

// newRing sets up a ring with room for entries submissions and cqEntries completions at a time.
func newRing(entries, cqEntries uint32) (*ring, error) {
	p := io_uring_params{flags: IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, cq_entries: cqEntries}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	switch errno {
	case 0:
	case unix.ENOSYS:
		return nil, fmt.Errorf("%w: io_uring_setup: ENOSYS (a kernel older than 5.1, or built without CONFIG_IO_URING)", errUnavailable)
	case unix.EPERM:
		return nil, fmt.Errorf("%w: io_uring_setup: EPERM (the sysctl kernel.io_uring_disabled, or a seccomp profile such as a container's, refuses it)", errUnavailable)
	default:
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &ring{fd: int(fd)}
	if p.features&IORING_FEAT_SINGLE_MMAP == 0 {
		r.free()
		return nil, fmt.Errorf("%w: this kernel maps the SQ and CQ rings separately (before 5.4)", errUnavailable)
	}
	// One mapping holds both rings: big enough for the larger of the two.
	size := max(p.sq_off.array+p.sq_entries*4, p.cq_off.cqes+p.cq_entries*uint32(unsafe.Sizeof(io_uring_cqe{})))
	var err error
	if r.rings, err = unix.Mmap(r.fd, IORING_OFF_SQ_RING, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.free()
		return nil, fmt.Errorf("mmap the rings: %w", err)
	}
	if r.sqeMem, err = unix.Mmap(r.fd, IORING_OFF_SQES, int(p.sq_entries)*int(unsafe.Sizeof(io_uring_sqe{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.free()
		return nil, fmt.Errorf("mmap the SQEs: %w", err)
	}
	at := func(off uint32) unsafe.Pointer { return unsafe.Pointer(&r.rings[off]) }
	r.sqHead, r.sqTail = (*uint32)(at(p.sq_off.head)), (*uint32)(at(p.sq_off.tail))
	r.sqMask = *(*uint32)(at(p.sq_off.ring_mask))
	r.sqArray = unsafe.Slice((*uint32)(at(p.sq_off.array)), p.sq_entries)
	r.sqes = unsafe.Slice((*io_uring_sqe)(unsafe.Pointer(&r.sqeMem[0])), p.sq_entries)
	r.cqHead, r.cqTail = (*uint32)(at(p.cq_off.head)), (*uint32)(at(p.cq_off.tail))
	r.cqMask = *(*uint32)(at(p.cq_off.ring_mask))
	r.cqes = unsafe.Slice((*io_uring_cqe)(at(p.cq_off.cqes)), p.cq_entries)
	// The SQ array adds a level of indirection nobody here needs: submission i always uses SQE slot i.
	for i := range r.sqArray {
		r.sqArray[i] = uint32(i)
	}
	return r, nil
}

// sqe returns the next free submission entry, zeroed, to be filled in. When the SQ is full it first
// hands the queued entries to the kernel (which copies them out), so there is always one.
func (r *ring) sqe() (*io_uring_sqe, error) {
	if r.tail-atomic.LoadUint32(r.sqHead) == uint32(len(r.sqes)) {
		if err := r.enter(0); err != nil {
			return nil, err
		}
		if r.tail-atomic.LoadUint32(r.sqHead) == uint32(len(r.sqes)) {
			return nil, errors.New("the submission queue is full, and the kernel takes nothing (its completion queue is full)")
		}
	}
	e := &r.sqes[r.tail&r.sqMask]
	*e = io_uring_sqe{}
	r.tail++
	r.queued++
	return e, nil
}

// enter submits what is queued and, if wait > 0, sleeps until at least wait completions are in the CQ.
// A signal (the Go runtime sends them to preempt goroutines) ends the wait with EINTR: then it waits
// again; what was submitted before the signal stays submitted.
func (r *ring) enter(wait uint32) error {
	flags := uintptr(0)
	if wait > 0 {
		flags = IORING_ENTER_GETEVENTS
	}
	// Publish the tail only now, after every entry before it is filled: without a kernel thread polling
	// the SQ (IORING_SETUP_SQPOLL), the kernel reads it in io_uring_enter and nowhere else.
	atomic.StoreUint32(r.sqTail, r.tail)
	for {
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(r.queued), uintptr(wait), flags, 0, 0)
		if errno == 0 || errno == unix.EINTR {
			r.queued -= min(uint32(n), r.queued)
		}
		switch errno {
		case 0:
			if r.queued > 0 && wait == 0 {
				continue // the kernel took only some (it was short of memory): offer the rest again
			}
			return nil
		case unix.EINTR:
			continue
		case unix.EBUSY:
			// The CQ is full and completions wait in the kernel's overflow list (IORING_FEAT_NODROP):
			// the loop must reap before the kernel takes more. Not an error.
			return nil
		default:
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
	}
}

// reap calls f for each completion in the CQ, in the kernel's order, and then tells the kernel that
// their slots are free again.
func (r *ring) reap(f func(cqe io_uring_cqe)) {
	head := *r.cqHead // only we write the head
	tail := atomic.LoadUint32(r.cqTail)
	for ; head != tail; head++ {
		f(r.cqes[head&r.cqMask]) // a copy: the slot is the kernel's again once the head moves past it
	}
	atomic.StoreUint32(r.cqHead, head)
}

// free unmaps the rings and closes the ring's fd, which ends every request still in flight.
func (r *ring) free() {
	if r.rings != nil {
		unix.Munmap(r.rings)
	}
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
	}
	unix.Close(r.fd)
}

// The requests this server makes. Each fills one SQE; enter hands them to the kernel. userData comes
// back in the request's completion: it says whose request it was and which.

// accept asks for the next client on the listener ln; with multishot, for every next client.
func (r *ring) accept(ln int, multishot bool, userData uint64) error {
	e, err := r.sqe()
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.user_data = IORING_OP_ACCEPT, int32(ln), userData
	e.op_flags = unix.SOCK_NONBLOCK | unix.SOCK_CLOEXEC // accept_flags, as accept4's
	if multishot {
		e.ioprio = IORING_ACCEPT_MULTISHOT
	}
	return nil
}

// recv asks for what fd receives next, into a buffer the kernel picks from group when bytes arrive:
// until then the request holds no memory of ours.
func (r *ring) recv(fd int, group uint16, userData uint64) error {
	e, err := r.sqe()
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.user_data = IORING_OP_RECV, int32(fd), userData
	e.flags, e.buf_group = IOSQE_BUFFER_SELECT, group // len 0: as much as the buffer holds
	return nil
}

// send asks the kernel to send p on fd. p must stay put, and reachable, until the completion comes:
// the kernel reads it then, not now.
func (r *ring) send(fd int, p []byte, userData uint64) error {
	e, err := r.sqe()
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.user_data = IORING_OP_SEND, int32(fd), userData
	e.addr, e.len = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(p)))), uint32(len(p))
	return nil
}

// read asks for what fd (not a socket: the signal pipe) has next, into p; p must stay put likewise.
func (r *ring) read(fd int, p []byte, userData uint64) error {
	e, err := r.sqe()
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.user_data = IORING_OP_READ, int32(fd), userData
	e.addr, e.len = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(p)))), uint32(len(p))
	return nil
}

// closeFD asks the kernel to close fd.
func (r *ring) closeFD(fd int, userData uint64) error {
	e, err := r.sqe()
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.user_data = IORING_OP_CLOSE, int32(fd), userData
	return nil
}

// cancel asks the kernel to end the request whose user_data is target: it then completes with
// ECANCELED (or with its own result, if it finished first). The cancel itself completes only if it
// fails (ENOENT: nothing to cancel any more).
func (r *ring) cancel(target, userData uint64) error {
	e, err := r.sqe()
	if err != nil {
		return err
	}
	e.opcode, e.addr, e.user_data = IORING_OP_ASYNC_CANCEL, target, userData
	e.fd, e.flags = -1, IOSQE_CQE_SKIP_SUCCESS
	return nil
}

// poll asks for a completion once fd is readable: readiness, as a request. The loop needs it once, to
// wait for a client while it has no fd to take one with (see main.go).
func (r *ring) poll(fd int, userData uint64) error {
	e, err := r.sqe()
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.user_data = IORING_OP_POLL_ADD, int32(fd), userData
	e.op_flags = unix.POLLIN // poll32_events
	return nil
}

// timeout asks for a completion (with ETIME) once d has passed.
func (r *ring) timeout(ts *unix.Timespec, userData uint64) error {
	e, err := r.sqe()
	if err != nil {
		return err
	}
	e.opcode, e.user_data, e.fd = IORING_OP_TIMEOUT, userData, -1
	e.addr, e.len = uint64(uintptr(unsafe.Pointer(ts))), 1
	return nil
}

// provide gives the kernel n buffers of size bytes each, from addr on, with ids from id on, in group:
// a recv with IOSQE_BUFFER_SELECT takes one when its bytes arrive. It completes only if it fails.
func (r *ring) provide(addr uintptr, size, n int, id, group uint16, userData uint64) error {
	e, err := r.sqe()
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.user_data = IORING_OP_PROVIDE_BUFFERS, int32(n), userData
	e.addr, e.len, e.off, e.buf_group = uint64(addr), uint32(size), uint64(id), group
	e.flags = IOSQE_CQE_SKIP_SUCCESS
	return nil
}
