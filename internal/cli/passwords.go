package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/atomicfile"
)

// passwordsVersion is the version of the password file this CLI writes
// and reads.
const passwordsVersion = 1

// passwordsFile is the name of the per-user credential file, kept next to
// the config file.
const passwordsFile = "passwords.json"

// passwordFile is the credential file: the admin password of each service
// this user created or reset, by service ID. The API shows a password once;
// this file is where `moat service psql` finds it again.
type passwordFile struct {
	Version  int                   `json:"version"`
	Services map[string]credential `json:"services"`
}

// credential is a service's admin user and password.
type credential struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// String keeps the password out of anything that prints a credential.
func (c credential) String() string { return c.User + ":REDACTED" }

// GoString is String for %#v.
func (c credential) GoString() string { return c.String() }

// LogValue keeps the password out of logs.
func (c credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user", c.User), slog.String("password", "REDACTED"))
}

// passwordsPath returns the credential file's path: passwords.json in the
// config file's directory.
func (a *app) passwordsPath() (string, error) {
	cfg, err := a.configPath()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(cfg), passwordsFile), nil
}

// loadPasswords reads the credential file; a missing one is empty.
func loadPasswords(path string) (passwordFile, error) {
	pf := passwordFile{Version: passwordsVersion, Services: map[string]credential{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return pf, nil
	}
	if err != nil {
		return pf, fmt.Errorf("read passwords: %w", err)
	}
	if err := parsePasswords(data, &pf); err != nil {
		return pf, withHint(fmt.Errorf("password file %s: %w", path, err), "fix it, or move it away (moat service password reset SVC gives a new password)")
	}
	return pf, nil
}

func parsePasswords(data []byte, pf *passwordFile) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(pf); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	if pf.Version != passwordsVersion {
		return fmt.Errorf("version %d is not supported (want %d)", pf.Version, passwordsVersion)
	}
	if pf.Services == nil {
		pf.Services = map[string]credential{}
	}
	return nil
}

// savePassword records cred as service svc's in the credential file at
// path: read, change and atomic replace under an exclusive lock, so two
// commands saving at once both keep their entry. The file is readable by
// its owner only.
func savePassword(path, svc string, cred credential) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save password: %w", err)
	}
	lf, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("save password: %w", err)
	}
	defer lf.Close()
	if err := lockFile(lf); err != nil {
		return fmt.Errorf("save password: lock %s: %w", lf.Name(), err)
	}
	pf, err := loadPasswords(path)
	if err != nil {
		return err
	}
	pf.Version = passwordsVersion
	pf.Services[svc] = cred
	data, err := json.MarshalIndent(pf, "", "  ")
	if err != nil {
		return fmt.Errorf("encode passwords: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save password: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("save password: %w", err)
	}
	return nil
}

// savedPassword returns the password saved for service svc, if any.
func (a *app) savedPassword(svc string) (credential, bool, error) {
	path, err := a.passwordsPath()
	if err != nil {
		return credential{}, false, err
	}
	pf, err := loadPasswords(path)
	if err != nil {
		return credential{}, false, err
	}
	c, ok := pf.Services[svc]
	return c, ok, nil
}

// storePassword saves cred as service svc's in the user's credential file
// and returns the file's path.
func (a *app) storePassword(svc string, cred credential) (string, error) {
	path, err := a.passwordsPath()
	if err != nil {
		return "", err
	}
	return path, savePassword(path, svc, cred)
}

// showPassword tells the user cred's password, saved to path unless saveErr
// says it could not be: in table output the password and where it went on
// stdout, in JSON output (where the object printed carries the password)
// that note on stderr, with -o id or value=FIELD both on stderr. A password that could not be saved is still shown
// (the API shows it only once), and the command then fails with saveErr.
func (a *app) showPassword(cred credential, path string, saveErr error) error {
	note := passwordNote(path, saveErr)
	switch _, value := valueField(a.output); {
	case a.output == "table":
		fmt.Fprintf(a.stdout, "password: %s\n%s\n", cred.Password, note)
	case value:
		// stdout is the field alone, for $(...): the password goes to stderr.
		fmt.Fprintf(a.stderr, "password: %s\n%s\n", cred.Password, note)
	default:
		fmt.Fprintln(a.stderr, note)
	}
	if saveErr != nil {
		return withHint(saveErr, "store the password shown; moat service psql also takes it from PGPASSWORD")
	}
	return nil
}

// passwordNote says where a password shown once was saved, if it was.
func passwordNote(path string, saveErr error) string {
	if saveErr != nil {
		return "(shown once; NOT saved: store it now)"
	}
	return "(shown once; saved to " + path + ")"
}

func (a *app) servicePasswordCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "password", Short: "A service's admin password"}
	cmd.AddCommand(&cobra.Command{
		Use:   "reset SVC",
		Short: "Give the service's admin user a new password (project admin); it is shown once and saved",
		Long: `Give the service's admin user a new password (project admin). The old one
stops working. The new one is printed once and saved, readable by you only,
in passwords.json next to the CLI config, where moat service psql finds it.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			pr, err := cl.ResetPassword(cmd.Context(), p, args[0])
			if err != nil {
				return err
			}
			if a.output == "json" {
				if err := a.print(pr); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "user: %s\n", pr.User)
			}
			cred := credential{User: pr.User, Password: pr.Password}
			path, saveErr := a.storePassword(args[0], cred)
			return a.showPassword(cred, path, saveErr)
		},
	})
	return cmd
}
