// Package e2e holds Moat's end-to-end tests: a whole `moat up` stack
// (control plane, agent, local provider, simulator) started in-process on
// real namespaces and real PostgreSQL, driven through the API client and
// real psql from simulated hosts, and through the moat command line for
// the README's walkthrough (readme_test.go) and moat down. Only tests live here; they need root and
// PostgreSQL, skip with the reason when those are missing, and fail when
// CI=true.
//
// How the tests run (docs/design/0020-test-suite-time.md), the rule for a
// new test:
//
//   - It calls t.Parallel() first, and starts its own stack with start,
//     startWith or startStack (its own data directory and namespace
//     prefix moat-eXXXXXX-). TestMain runs three tests at once (-parallel
//     overrides); the tests without t.Parallel run alone first.
//   - A test that times a product promise in wall time (a session cut
//     within a second) may run alone instead: it says why in a
//     "Serial: ..." paragraph of its doc comment. TestEveryTestSaysHowItRuns
//     checks that every test does one or the other.
//   - A parallel test changes nothing process-wide: no t.Setenv,
//     os.Setenv or os.Chdir (the moat commands run in-process take the
//     data directory and URL as flags; MOAT_CONFIG is set once for the
//     run), no fixed port (listen on 127.0.0.1:0), no host-wide name
//     outside its stack's prefix.
//   - It waits on conditions (waitFor, the client's Wait* with a short
//     interval), never a fixed sleep where a condition can be polled;
//     and it keeps to one stack unless it tests several.
//
// Under -race (make test in CI) the in-process part of a stack runs with
// the race detector and its processes (agents, volume servers, WAL
// archiving, DNS server, the README's moat commands) run a moat built
// without it (moatBinary); without -race they run this test binary as
// moat.
package e2e
