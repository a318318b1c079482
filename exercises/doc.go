// Package exercises checks the lab's exercises; see README.md in this folder.
package exercises
