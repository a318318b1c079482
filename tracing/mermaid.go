package tracing

import (
	"fmt"
	"strings"
)

// Mermaid turns a transcript into a mermaid sequence diagram, which Git hosts render as a picture: one
// lifeline per client and one for the server, the clients' actions as arrows to the server, the
// server's writes and closes as arrows back, and what the server's loop did as notes on its lifeline.
func Mermaid(transcript string) string {
	var b strings.Builder
	b.WriteString("sequenceDiagram\n")
	seen := map[string]bool{}
	var clients []string
	lines := Lines(transcript)
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 1 && (f[0] == ">>" || f[0] == "<<") && !seen[f[1]] && f[1] != "server" && f[1] != "signal" {
			seen[f[1]] = true
			clients = append(clients, f[1])
		}
	}
	for _, c := range clients {
		fmt.Fprintf(&b, "    participant %s\n", c)
	}
	b.WriteString("    participant server\n")
	for _, l := range lines {
		verb, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		who, what, _ := strings.Cut(rest, " ")
		switch verb {
		case ">>":
			if who == "signal" {
				fmt.Fprintf(&b, "    Note over server: signal %s\n", text(what))
				continue
			}
			fmt.Fprintf(&b, "    %s->>server: %s\n", who, text(what))
		case "<<":
			if strings.HasPrefix(what, "nothing") || what == "EOF" {
				fmt.Fprintf(&b, "    Note over %s: %s\n", who, text(what))
			}
		case "write":
			if strings.Contains(what, " of ") {
				fmt.Fprintf(&b, "    server-->>%s: %s\n", who, text(what))
			} else {
				fmt.Fprintf(&b, "    Note over server: write %s %s\n", who, text(what))
			}
		case "close":
			fmt.Fprintf(&b, "    server--x%s: close %s\n", who, text(what))
		case "listen":
			// The diagram starts with the server listening: nothing to draw.
		default:
			fmt.Fprintf(&b, "    Note over server: %s %s\n", verb, text(rest))
		}
	}
	return b.String()
}

// text makes trace text safe inside a mermaid message: mermaid reads ; and # as syntax, and quotes
// add nothing to a picture.
func text(s string) string {
	r := strings.NewReplacer(`\n`, "⏎", `"`, "", ";", ",", "#", "no.", "...", "…")
	return r.Replace(s)
}
