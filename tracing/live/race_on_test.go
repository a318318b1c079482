//go:build race

package live

// raceBuild: this test binary was built with -race.
const raceBuild = true
