//go:build race

package e2e

// raceEnabled: this test binary has the race detector.
const raceEnabled = true
