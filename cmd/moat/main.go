// Command moat is the single Moat binary: control plane, agent, CLI and
// simulator. All behaviour lives in internal/cli.
package main

func main() {}
