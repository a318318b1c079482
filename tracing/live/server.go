//go:build unix

// Package live serves a page that shows an event loop move: a step's replayed transcript drawn turn
// by turn (sockets, the watched and ready lists, epoll's interest list, each client's queue and
// lane), a live session against a step started as a child with buttons that act on real sockets,
// and two steps compared on one scenario. The Go side parses the trace (parse.go); the page in
// static/ only draws the events it is given. Everything it needs is embedded: it works offline.
package live

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"
	"sync"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/scenario"
)

//go:embed static
var static embed.FS

// Server is the page and its API. Close it to end every live session it started.
type Server struct {
	root string // the module's root, where the steps are
	mux  *http.ServeMux

	mu       sync.Mutex
	sessions map[string]*Session
	nextID   int
	played   map[string]*playing // replayed transcripts, by step and scenario
	closed   bool
}

// Played is a step's transcript for a scenario, as the page draws it.
type Played struct {
	Step     string   `json:"step"`
	Scenario string   `json:"scenario"`
	Args     []string `json:"args"`   // the server's flags
	Events   []Event  `json:"events"` // the transcript, line by line
	Error    string   `json:"error,omitempty"`
}

// playing is a replay that one request runs and others wait for.
type playing struct {
	done chan struct{}
	p    *Played
	err  error // the request itself was wrong (unknown step or scenario), or the step did not build
}

// New returns a Server for the steps of the module at root.
func New(root string) *Server {
	s := &Server{root: root, mux: http.NewServeMux(), sessions: map[string]*Session{}, played: map[string]*playing{}}
	files, _ := fs.Sub(static, "static")
	s.mux.Handle("GET /", http.FileServerFS(files))
	s.mux.HandleFunc("GET /api/steps", s.handleSteps)
	s.mux.HandleFunc("GET /api/replay", s.handleReplay)
	s.mux.HandleFunc("GET /api/compare", s.handleCompare)
	s.mux.HandleFunc("POST /api/live", s.handleStart)
	s.mux.HandleFunc("GET /api/live/{id}/events", s.handleEvents)
	s.mux.HandleFunc("POST /api/live/{id}/act", s.handleAct)
	s.mux.HandleFunc("POST /api/live/{id}/close", s.handleClose)
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close ends every live session: their servers are killed (with their process groups), their
// clients' sockets closed. Sessions started after Close are refused.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	sessions := s.sessions
	s.sessions = map[string]*Session{}
	s.mu.Unlock()
	for _, se := range sessions {
		se.Close()
	}
}

// A requestError is the client's mistake: an unknown step or scenario, a bad argument (400 or 404).
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func notFound(format string, args ...any) error {
	return &requestError{http.StatusNotFound, fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return &requestError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// writeJSON answers v, or the error as {"error": "..."} with its status: 4xx for a bad request, 500
// for the rest (a step that does not build, a server that would not start).
func writeJSON(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		status := http.StatusInternalServerError
		var re *requestError
		if errors.As(err, &re) {
			status = re.status
		}
		w.WriteHeader(status)
		v = map[string]string{"error": err.Error()}
	}
	json.NewEncoder(w).Encode(v)
}

func (s *Server) handleSteps(w http.ResponseWriter, r *http.Request) {
	steps, err := Steps(s.root)
	writeJSON(w, steps, err)
}

// step finds a step by name, with a message that lists the known ones.
func (s *Server) step(name string) (Step, error) {
	steps, err := Steps(s.root)
	if err != nil {
		return Step{}, err
	}
	st, ok := find(steps, name)
	if !ok {
		var names []string
		for _, st := range steps {
			names = append(names, st.Name)
		}
		return Step{}, notFound("unknown step %q (the steps: %s)", name, strings.Join(names, ", "))
	}
	return st, nil
}

// scenario finds a scenario of st.
func (s *Server) scenario(st Step, name string) (Scenario, error) {
	sc, ok := scenarioOf(st, name)
	if !ok {
		var names []string
		for _, sc := range st.Scenarios {
			names = append(names, sc.Name)
		}
		return Scenario{}, notFound("%s has no scenario %q (its scenarios: %s)", st.Name, name, strings.Join(names, ", "))
	}
	return sc, nil
}

func (s *Server) handleReplay(w http.ResponseWriter, r *http.Request) {
	st, err := s.step(r.FormValue("step"))
	if err != nil {
		writeJSON(w, nil, err)
		return
	}
	sc, err := s.scenario(st, r.FormValue("scenario"))
	if err != nil {
		writeJSON(w, nil, err)
		return
	}
	p, err := s.play(st, sc)
	writeJSON(w, p, err)
}

// Compare is two steps' transcripts of one scenario, and their lines aligned: each row holds the
// index of a line in A, in B, or both (-1 where a side has no line), and whether the line differs.
type Compare struct {
	A    *Played      `json:"a"`
	B    *Played      `json:"b"`
	Rows []CompareRow `json:"rows"`
}

// CompareRow is one row of a comparison: a line of A and B that are equal, or a line only one has.
type CompareRow struct {
	A    int  `json:"a"`
	B    int  `json:"b"`
	Diff bool `json:"diff"`
}

func (s *Server) handleCompare(w http.ResponseWriter, r *http.Request) {
	a, err := s.step(r.FormValue("a"))
	if err != nil {
		writeJSON(w, nil, err)
		return
	}
	b, err := s.step(r.FormValue("b"))
	if err != nil {
		writeJSON(w, nil, err)
		return
	}
	// The scenario is A's; B plays the same file, with the flags B needs for its service.
	sc, err := s.scenario(a, r.FormValue("scenario"))
	if err != nil {
		writeJSON(w, nil, err)
		return
	}
	if sc.Service == "room" && number(b.Name) < 4 {
		writeJSON(w, nil, badRequest("%s is a chat room scenario: %s serves the echo only (compare it with step04 on)", sc.Name, b.Name))
		return
	}
	if sc.Service == "echo" && number(b.Name) == 4 {
		writeJSON(w, nil, badRequest("%s is an echo scenario: step04 serves the chat room only (compare it with step03, or step05 on)", sc.Name))
		return
	}
	pa, err := s.play(a, sc)
	if err != nil {
		writeJSON(w, nil, err)
		return
	}
	pb, err := s.play(b, sc)
	if err != nil {
		writeJSON(w, nil, err)
		return
	}
	writeJSON(w, &Compare{A: pa, B: pb, Rows: align(pa.Events, pb.Events)}, nil)
}

// align lines up two transcripts with tracing's edit script: equal lines side by side, the others
// marked.
func align(a, b []Event) []CompareRow {
	text := func(es []Event) []string {
		lines := make([]string, len(es))
		for i, e := range es {
			lines[i] = e.Text
		}
		return lines
	}
	rows := []CompareRow{}
	i, j := 0, 0
	for _, e := range tracing.EditScript(text(a), text(b)) {
		switch e.Op {
		case ' ':
			rows = append(rows, CompareRow{A: i, B: j})
			i, j = i+1, j+1
		case '-':
			rows = append(rows, CompareRow{A: i, B: -1, Diff: true})
			i++
		default:
			rows = append(rows, CompareRow{A: -1, B: j, Diff: true})
			j++
		}
	}
	return rows
}

// play replays sc on st, once per scenario and step: the transcript is the same on every run.
func (s *Server) play(st Step, sc Scenario) (*Played, error) {
	key := st.Name + "\x00" + sc.File + "\x00" + sc.Service
	s.mu.Lock()
	pl, ok := s.played[key]
	if !ok {
		pl = &playing{done: make(chan struct{})}
		s.played[key] = pl
	}
	s.mu.Unlock()
	if ok {
		<-pl.done
		return pl.p, pl.err
	}
	pl.p, pl.err = s.replay(st, sc)
	if pl.err != nil || pl.p.Error != "" { // a failure may be the machine's (a slow build): try again next time
		s.mu.Lock()
		delete(s.played, key)
		s.mu.Unlock()
	}
	close(pl.done)
	return pl.p, pl.err
}

func (s *Server) replay(st Step, sc Scenario) (*Played, error) {
	parsed, err := scenario.ParseFile(filepath.Join(s.root, sc.File))
	if err != nil {
		return nil, err
	}
	bin, err := replay.Build(s.root, "./"+st.Dir)
	if err != nil {
		return nil, fmt.Errorf("%s does not build: %v", st.Name, err)
	}
	args := ServerArgs(st.Name, sc, parsed.Args)
	p := &Played{Step: st.Name, Scenario: sc.Name, Args: append(append([]string{}, parsed.Args...), args...)}
	res, err := replay.Run(bin, parsed, args...)
	transcript := ""
	if res != nil {
		transcript = res.Transcript
	}
	if err != nil {
		// A failed expectation, a server that exited or never started: the page shows the
		// transcript so far, and why it stopped (the summary: the page has the transcript).
		p.Error = err.Error()
		if f := (*replay.Failure)(nil); errors.As(err, &f) {
			p.Error = f.Summary()
		}
	}
	p.Events = Parse(transcript)
	return p, nil
}
