// Package grade grades a class: each student's copy of a step (a clone of the lab, a bare step
// folder, or a zip of either) is built once and played every scenario of the step that has a golden
// transcript (or an exercise's check), under a time limit and resource limits, and each run becomes
// one cell of a table, student by scenario. `go run ./tracing/cmd/grade` is the command; it needs
// Linux (/proc and prlimit).
package grade
