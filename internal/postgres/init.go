package postgres

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Init creates the cluster if the data directory holds none: initdb for a
// primary, a base backup over verified TLS for a replica (Config.Primary),
// a stored base backup for a restore (Config.Restore).
// The cluster is built in DataDir + ".new" and renamed into place, so a
// crash never leaves a half-made data directory behind. It then writes
// Moat's files (moat.conf, pg_ident.conf, the TLS files) and, for a new
// cluster, a pg_hba.conf refusing every network connection until
// WriteHBA is called.
//
// On an initialised data directory it only rewrites Moat's files (not
// pg_hba.conf), so calling it on every agent start is safe. It refuses a
// data directory whose role (primary or replica) differs from Config's.
func (in *Instance) Init(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.initialized() {
		standby := exists(filepath.Join(in.cfg.DataDir, "standby.signal"))
		switch {
		case standby && in.cfg.Primary == nil && !in.cfg.KeepStandby:
			return fmt.Errorf("init %s: the data directory holds a replica but the config has no primary", in.cfg.DataDir)
		case !standby && in.cfg.Primary != nil:
			return fmt.Errorf("init %s: the data directory holds a primary but the config names a primary to replicate; wipe it first", in.cfg.DataDir)
		}
		if err := in.adopt(ctx); err != nil {
			return fmt.Errorf("init %s: %w", in.cfg.DataDir, err)
		}
		if err := in.writeFiles(in.cfg.DataDir); err != nil {
			return fmt.Errorf("init %s: %w", in.cfg.DataDir, err)
		}
		return nil
	}
	if err := in.create(ctx); err != nil {
		return fmt.Errorf("init %s: %w", in.cfg.DataDir, err)
	}
	return nil
}

func (in *Instance) create(ctx context.Context) error {
	t0 := time.Now()
	// A data directory that exists but holds no cluster must be empty.
	if err := os.Remove(in.cfg.DataDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("data directory exists, holds no cluster and is not empty: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(in.cfg.DataDir), 0o755); err != nil {
		return err
	}
	tmp := in.cfg.DataDir + ".new"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := in.ensureDir(tmp); err != nil {
		return err
	}
	if err := in.writeTLS(); err != nil {
		return err
	}
	if r := in.cfg.Restore; r != nil && in.cfg.Primary == nil {
		if err := in.extract(ctx, tmp, r); err != nil {
			return fmt.Errorf("restore base backup: %w", err)
		}
		if err := in.writeFile(filepath.Join(tmp, "recovery.signal"), nil, 0o600); err != nil {
			return err
		}
	} else if p := in.cfg.Primary; p == nil {
		args := []string{"-D", tmp, "-U", Superuser, "-E", "UTF8", "--locale=C.UTF-8",
			"--auth-local=peer", "--auth-host=reject", "--data-checksums", "--no-instructions"}
		if in.cfg.NoSync {
			args = append(args, "--no-sync")
		}
		if err := in.run(ctx, "initdb", args...); err != nil {
			return err
		}
	} else {
		args := []string{"-D", tmp, "-d", in.upstreamConninfo(), "-X", "stream", "-c", "fast", "-w"}
		if in.cfg.NoSync {
			args = append(args, "--no-sync")
		}
		if err := in.run(ctx, "pg_basebackup", args...); err != nil {
			return fmt.Errorf("base backup from %s:%d: %w", p.Host, p.Port, err)
		}
		if err := in.writeFile(filepath.Join(tmp, "standby.signal"), nil, 0o600); err != nil {
			return err
		}
	}
	conf := filepath.Join(tmp, "postgresql.conf")
	b, err := os.ReadFile(conf)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), includeLine) {
		if err := in.writeFile(conf, append(b, "\n"+includeLine...), 0o600); err != nil {
			return err
		}
	}
	hba, err := RenderHBA(Policy{})
	if err != nil {
		return err
	}
	if err := in.writeFile(filepath.Join(tmp, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return err
	}
	if err := in.writeFiles(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, in.cfg.DataDir); err != nil {
		return err
	}
	in.log.Info("postgres initialised", "data_dir", in.cfg.DataDir, "replica", in.cfg.Primary != nil, "restored", in.cfg.Restore != nil, "duration", time.Since(t0))
	return nil
}

// runAs is the OS user the server runs as when it is not this process's
// own: Config.User when this process is root, else "".
func (in *Instance) runAs() string {
	if in.cred == nil {
		return ""
	}
	return in.cfg.User
}

// adopt gives a cluster that belongs to another OS user (a node made
// before each node had its own user) to Config.User: it stops the
// server, which runs as that other user, and changes the owner of the
// data, TLS and socket directories and of everything in them. It does
// nothing when the data directory is already Config.User's, or when this
// process is not root.
func (in *Instance) adopt(ctx context.Context) error {
	if in.cred == nil {
		return nil
	}
	var st syscall.Stat_t
	if err := syscall.Stat(in.cfg.DataDir, &st); err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	if st.Uid == in.cred.Uid {
		return nil
	}
	in.log.Warn("data directory belongs to another user; giving it to the node's", "data_dir", in.cfg.DataDir, "uid", st.Uid, "user", in.cfg.User)
	if err := in.stop(ctx); err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	for _, root := range []string{in.cfg.DataDir, in.cfg.TLSDir, in.cfg.SocketDir} {
		err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, int(in.cred.Uid), int(in.cred.Gid))
		})
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("adopt: %w", err)
		}
	}
	return nil
}

// initialized reports whether the data directory holds a cluster.
func (in *Instance) initialized() bool {
	return exists(filepath.Join(in.cfg.DataDir, "PG_VERSION"))
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// writeFiles writes the TLS files, moat.conf and pg_ident.conf for the
// cluster in dir.
func (in *Instance) writeFiles(dir string) error {
	if err := in.writeTLS(); err != nil {
		return err
	}
	conf, err := in.renderConf()
	if err != nil {
		return err
	}
	if err := in.writeFile(filepath.Join(dir, confFile), []byte(conf), 0o600); err != nil {
		return err
	}
	return in.writeIdent(dir, in.policy)
}

// writeIdent writes pg_ident.conf for policy p in the cluster in dir.
func (in *Instance) writeIdent(dir string, p Policy) error {
	ident, err := RenderIdent(p, in.osUser, in.runAs())
	if err != nil {
		return err
	}
	return in.writeFile(filepath.Join(dir, "pg_ident.conf"), []byte(ident), 0o600)
}

func (in *Instance) writeTLS() error {
	c := in.cfg
	if err := in.ensureDir(c.TLSDir); err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
	}{
		{serverCertFile, c.ServerCertPEM},
		{serverKeyFile, c.ServerKeyPEM},
		{clientCAFile, c.CAPEM},
	}
	if p := c.Primary; p != nil {
		files = append(files, []struct {
			name string
			data []byte
		}{
			{upstreamCertFile, p.ClientCertPEM},
			{upstreamKeyFile, p.ClientKeyPEM},
			{upstreamCAFile, p.CAPEM},
		}...)
	}
	for _, f := range files {
		p := filepath.Join(c.TLSDir, f.name)
		if len(f.data) == 0 {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			continue
		}
		if err := in.writeFile(p, f.data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// UpdateTLS replaces the server certificate, its key and the client CA
// (renewal); call Reload afterwards for the server to use them.
func (in *Instance) UpdateTLS(serverCertPEM, serverKeyPEM, caPEM []byte) error {
	if len(serverCertPEM) == 0 || len(serverKeyPEM) == 0 {
		return errors.New("update tls: server certificate and key are required")
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.cfg.ServerCertPEM, in.cfg.ServerKeyPEM, in.cfg.CAPEM = serverCertPEM, serverKeyPEM, caPEM
	if err := in.writeTLS(); err != nil {
		return fmt.Errorf("update tls: %w", err)
	}
	if in.initialized() {
		// ssl_ca_file appears or goes with the CA.
		if err := in.writeFiles(in.cfg.DataDir); err != nil {
			return fmt.Errorf("update tls: %w", err)
		}
	}
	return nil
}

// WriteHBA renders p and replaces pg_ident.conf (the replicas' maps),
// then pg_hba.conf, atomically each; call Reload afterwards for the
// server to use them.
func (in *Instance) WriteHBA(p Policy) error {
	hba, err := RenderHBA(p)
	if err != nil {
		return err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.initialized() {
		return fmt.Errorf("write pg_hba: %s: %w", in.cfg.DataDir, ErrNotInitialized)
	}
	if err := in.writeIdent(in.cfg.DataDir, p); err != nil {
		return fmt.Errorf("write pg_ident: %w", err)
	}
	in.policy = p
	if err := in.writeFile(filepath.Join(in.cfg.DataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fmt.Errorf("write pg_hba: %w", err)
	}
	return nil
}

// ensureDir makes dir (mode 0700) owned by the postgres user; its parents,
// if missing, are made 0755 and owned by this process's user.
func (in *Instance) ensureDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	return in.chown(dir)
}

// writeFile writes data to path atomically (a temporary file renamed over
// it), with mode perm and owned by the postgres user.
func (in *Instance) writeFile(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := in.chown(f.Name()); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func (in *Instance) chown(p string) error {
	if in.cred == nil {
		return nil
	}
	return os.Chown(p, int(in.cred.Uid), int(in.cred.Gid))
}

// extract writes the base backup r streams into dir: directories and
// regular files only, every name inside dir, owned by the postgres user.
// A symbolic link (a tablespace), a hard link or a device is an error.
func (in *Instance) extract(ctx context.Context, dir string, r *Restore) error {
	if r.Tar == nil {
		return errors.New("no base backup source")
	}
	pr, pw := io.Pipe()
	fetched := make(chan error, 1)
	go func() {
		err := r.Tar(ctx, pw)
		pw.CloseWithError(err)
		fetched <- err
	}()
	err := in.untar(tar.NewReader(pr), dir)
	pr.CloseWithError(errors.New("extraction ended"))
	ferr := <-fetched
	if err != nil {
		return err
	}
	return ferr
}

func (in *Instance) untar(tr *tar.Reader, dir string) error {
	files := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		name := filepath.Clean(filepath.FromSlash(h.Name))
		if !filepath.IsLocal(name) {
			return fmt.Errorf("tar member %q is outside the data directory", h.Name)
		}
		p := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := in.ensureDirIn(dir, p); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := in.ensureDirIn(dir, filepath.Dir(p)); err != nil {
				return err
			}
			if err := in.extractFile(p, tr); err != nil {
				return fmt.Errorf("extract %s: %w", h.Name, err)
			}
			files++
		default:
			return fmt.Errorf("tar member %q is of type %q: only directories and regular files are restored (a tablespace is not supported)", h.Name, h.Typeflag)
		}
	}
	if !exists(filepath.Join(dir, "PG_VERSION")) || !exists(filepath.Join(dir, "backup_label")) {
		return fmt.Errorf("the tar (%d files) holds no PG_VERSION or backup_label: not a base backup", files)
	}
	return nil
}

func (in *Instance) extractFile(p string, r io.Reader) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := in.chown(p); err != nil {
		f.Close()
		return err
	}
	if !in.cfg.NoSync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// ensureDirIn makes p and every missing directory between root and p
// like ensureDir does p: mode 0700, owned by the postgres user.
func (in *Instance) ensureDirIn(root, p string) error {
	if p == root || len(p) < len(root) {
		return nil
	}
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		return nil
	}
	if err := in.ensureDirIn(root, filepath.Dir(p)); err != nil {
		return err
	}
	return in.ensureDir(p)
}
