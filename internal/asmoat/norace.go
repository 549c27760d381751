//go:build !race

package asmoat

// raceEnabled: this binary has the race detector.
const raceEnabled = false
