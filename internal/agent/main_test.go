package agent_test

import (
	"testing"

	"github.com/moatdb/moat/internal/asmoat"
)

// TestMain lets PostgreSQL's archive_command run this test binary as moat.
func TestMain(m *testing.M) { asmoat.Main(m) }
