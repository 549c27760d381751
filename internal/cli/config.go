package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/moatdb/moat/internal/atomicfile"
	"github.com/moatdb/moat/internal/client"
)

// configVersion is the version of the config file this CLI writes and reads.
const configVersion = 1

// fileConfig is the config file `moat login` writes.
type fileConfig struct {
	Version int    `json:"version"`
	URL     string `json:"url"`
	Token   string `json:"token"`
	// CAPEM is the API server's CA certificate itself, not its path, so the
	// config keeps working wherever the file it came from goes.
	CAPEM   string `json:"ca_pem,omitempty"`
	Project string `json:"project,omitempty"`
}

// configPath returns the config file's path: MOAT_CONFIG, else
// $XDG_CONFIG_HOME/moat/config.json, else ~/.config/moat/config.json.
func (a *app) configPath() (string, error) {
	if p := a.getenv("MOAT_CONFIG"); p != "" {
		return p, nil
	}
	if x := a.getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "moat", "config.json"), nil
	}
	home := a.getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", withHint(fmt.Errorf("find the config file: %w", err), "set MOAT_CONFIG to the config file's path")
		}
	}
	return filepath.Join(home, ".config", "moat", "config.json"), nil
}

// loadConfig reads the config file; a missing one is an empty config.
func loadConfig(path string) (fileConfig, error) {
	var c fileConfig
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	if err := parseConfig(data, &c); err != nil {
		return c, withHint(fmt.Errorf("config file %s: %w", path, err), "fix or delete it; moat login writes a new one")
	}
	return c, nil
}

func parseConfig(data []byte, c *fileConfig) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	if c.Version != configVersion {
		return fmt.Errorf("version %d is not supported (want %d)", c.Version, configVersion)
	}
	return nil
}

// saveConfig writes c to path atomically, readable by its owner only.
func saveConfig(path string, c fileConfig) error {
	c.Version = configVersion
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// conn is the resolved connection settings.
type conn struct {
	url, token, project string
	caFile              string
	caPEM               []byte
}

// resolve returns the connection settings: a flag wins over the
// environment, which wins over the config file (read only when needed).
func (a *app) resolve() (conn, error) {
	tok, err := a.flagToken()
	if err != nil {
		return conn{}, err
	}
	c := conn{
		url:     first(a.url, a.getenv("MOAT_URL")),
		token:   first(tok, a.getenv("MOAT_TOKEN")),
		caFile:  first(a.ca, a.getenv("MOAT_CA")),
		project: first(a.project, a.getenv("MOAT_PROJECT")),
	}
	if c.url != "" && c.token != "" && c.caFile != "" && c.project != "" {
		return c, nil
	}
	path, err := a.configPath()
	if err != nil {
		return c, err
	}
	fc, err := loadConfig(path)
	if err != nil {
		return c, err
	}
	if c.url == "" {
		c.url = fc.URL
		// A CA stored with another server's URL would not fit a URL given
		// explicitly, and vice versa; take both from the file or neither.
		if c.caFile == "" {
			c.caPEM = []byte(fc.CAPEM)
		}
	} else if c.caFile == "" && c.url == fc.URL {
		c.caPEM = []byte(fc.CAPEM)
	}
	if c.token == "" {
		c.token = fc.Token
	}
	if c.project == "" {
		c.project = fc.Project
	}
	return c, nil
}

// flagToken returns the token given by --token-file or --token ("" when
// neither); --token, which puts the token in the process's arguments, is
// warned about once.
func (a *app) flagToken() (string, error) {
	if a.tokenFile != "" {
		b, err := os.ReadFile(a.tokenFile)
		if err != nil {
			return "", withHint(fmt.Errorf("read --token-file: %w", err), "give the file holding the token, e.g. the data directory's admin.token")
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", withHint(fmt.Errorf("--token-file %s is empty", a.tokenFile), "give the file holding the token")
		}
		return tok, nil
	}
	if a.token != "" && !a.warnedToken {
		a.warnedToken = true
		fmt.Fprintln(a.stderr, "moat: warning: --token puts the token in the process's arguments, where other users can see it; use MOAT_TOKEN, --token-file or moat login")
	}
	return a.token, nil
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// client returns an API client for the resolved connection.
func (a *app) client() (*client.Client, conn, error) {
	c, err := a.resolve()
	if err != nil {
		return nil, c, err
	}
	return newClient(c)
}

func newClient(c conn) (*client.Client, conn, error) {
	if c.url == "" {
		return nil, c, withHint(errors.New("no API URL"), "set MOAT_URL or pass --url, or run moat login")
	}
	if c.token == "" {
		return nil, c, withHint(errors.New("no API token"), "set MOAT_TOKEN or run moat login")
	}
	cl, err := client.New(client.Config{URL: c.url, Token: c.token, CAFile: c.caFile, CAPEM: c.caPEM, UserAgent: "moat-cli"})
	if err != nil {
		return nil, c, withHint(err, "check --url/MOAT_URL (https://HOST:PORT) and --ca/MOAT_CA (the server's api-ca.pem)")
	}
	return cl, c, nil
}

// projectClient is client for commands on a project's objects.
func (a *app) projectClient() (*client.Client, string, error) {
	cl, c, err := a.client()
	if err != nil {
		return nil, "", err
	}
	if c.project == "" {
		return nil, "", withHint(errors.New("no project"), "set MOAT_PROJECT or pass --project (moat project list)")
	}
	return cl, c.project, nil
}
