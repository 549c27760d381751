// Package e2e holds Moat's end-to-end tests: a whole `moat up` stack
// (control plane, agent, local provider, simulator) started in-process on
// real namespaces and real PostgreSQL, driven through the API client and
// real psql from simulated hosts, and through the moat command line for
// the README's walkthrough (readme_test.go) and moat down. Only tests live here; they need root and
// PostgreSQL, skip with the reason when those are missing, and fail when
// CI=true.
package e2e
