//go:build linux

package main

// The registry of names: who is in the room, under which name, on which loop. It is the one piece of
// the room the loops share, behind a mutex: a name must be unique across the room, so checking that
// it is free and taking it have to be one step, whichever loop asks.

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

type registry struct {
	mu      sync.Mutex
	members []entry      // in order of arrival
	guests  int          // default names handed out so far: guest1, guest2, ...
	clock   atomic.Int64 // counts joins and lines said, across the loops: see tick
}

// An entry is one member: its id (never reused), the loop that owns it, and its name.
type entry struct {
	id, loop int
	name     string
}

// guest adds a member on loop under the first default name nobody holds (someone may have taken
// guestN with /nick), and returns its id and name.
func (r *registry) guest(loop int) (id int, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name == "" || r.find(name) >= 0 {
		r.guests++
		name = fmt.Sprintf("guest%d", r.guests)
	}
	id = r.tick()
	r.members = append(r.members, entry{id: id, loop: loop, name: name})
	return id, name
}

// tick returns the next reading of the room's clock: a member's id is the clock at its join, and a
// line shared with the other loops carries the clock at the moment it was said. A loop that delivers
// a line skips the members whose id is later: they joined after it was said.
func (r *registry) tick() int { return int(r.clock.Add(1)) }

// rename gives member id the name, unless another member holds it.
func (r *registry) rename(id int, name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i := r.find(name); i >= 0 && r.members[i].id != id {
		return false
	}
	if i := slices.IndexFunc(r.members, func(e entry) bool { return e.id == id }); i >= 0 {
		r.members[i].name = name
	}
	return true
}

// lookup returns the member called name, wherever it is.
func (r *registry) lookup(name string) (e entry, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i := r.find(name); i >= 0 {
		return r.members[i], true
	}
	return entry{}, false
}

// remove takes member id out: its name is free again.
func (r *registry) remove(id int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.members = slices.DeleteFunc(r.members, func(e entry) bool { return e.id == id })
}

// names returns every member's name, in order of arrival.
func (r *registry) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, len(r.members))
	for i, e := range r.members {
		names[i] = e.name
	}
	return names
}

// find returns the index of the member called name (names are unique regardless of case), or -1.
// The caller holds the lock.
func (r *registry) find(name string) int {
	return slices.IndexFunc(r.members, func(e entry) bool { return strings.EqualFold(e.name, name) })
}
