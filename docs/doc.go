// Package docs holds the lab's lessons (Markdown). Its test keeps them honest: every block between
// <!-- include ... --> and <!-- end --> must equal what it names, regenerated with go test ./docs -update.
//
//	<!-- include step02-select-echo/testdata/seed.trace -->   a whole file (a golden transcript)
//	<!-- include step02-select-echo/main.go func serve -->     one Go declaration, from the code itself
//	<!-- include step02-select-echo/main.go lines 10-20 -->    a range of lines (use sparingly)
//	<!-- include step02-select-echo/testdata/seed.trace mermaid -->  a transcript drawn as a sequence diagram
package docs
