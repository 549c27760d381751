package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// defaultPsqlHost is the simulated internet host `moat up` creates and
// `moat service psql` runs from.
const defaultPsqlHost = "laptop"

// conninfo renders libpq keyword/value pairs (kv is keyword, value,
// keyword, value, ...) as a connection string, each value quoted when
// libpq needs it.
func conninfo(kv ...string) (string, error) {
	if len(kv)%2 != 0 {
		return "", errors.New("conninfo: odd number of keywords and values")
	}
	parts := make([]string, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		v, err := conninfoValue(kv[i+1])
		if err != nil {
			return "", fmt.Errorf("%s: %w", kv[i], err)
		}
		parts = append(parts, kv[i]+"="+v)
	}
	return strings.Join(parts, " "), nil
}

// conninfoValue writes v the way libpq's connection string parser reads it
// back unchanged: as is when it is made only of characters that cannot end
// or escape a value, otherwise in single quotes with ' and \ escaped by a
// backslash (also the empty value). A NUL byte cannot be passed at all.
func conninfoValue(v string) (string, error) {
	if strings.IndexByte(v, 0) >= 0 {
		return "", errors.New("value contains a NUL byte")
	}
	if v != "" && strings.Trim(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:/@+,") == "" {
		return v, nil
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(v) + "'", nil
}

// passfileLine is a ~/.pgpass line giving password for any connection; ':'
// and '\' in it are escaped as libpq wants.
func passfileLine(password string) string {
	r := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	return "*:*:*:*:" + r.Replace(password) + "\n"
}

// dashArgs is cobra.PositionalArgs for "NAME [-- ARGS...]" (min 0) or
// "NAME -- CMD ARGS..." (min 1): one argument, then at least min after "--".
func dashArgs(what string, min int) cobra.PositionalArgs {
	return args(func(cmd *cobra.Command, a []string) error {
		dash := cmd.ArgsLenAtDash()
		switch {
		case len(a) == 0 || dash == 0:
			return fmt.Errorf("missing %s", what)
		case dash == -1 && len(a) > 1:
			return fmt.Errorf("want one %s, then the command's arguments after --", what)
		case dash > 1:
			return fmt.Errorf("want one %s before --, got %d", what, dash)
		case len(a)-1 < min:
			return errors.New("no command after --")
		}
		return nil
	})
}
