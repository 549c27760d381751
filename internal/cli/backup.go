package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/archive"
	"github.com/moatdb/moat/internal/atomicfile"
	"github.com/moatdb/moat/internal/backup"
)

func (a *app) backupCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "backup", Short: "A service's base backups; backup files offline (inspect, decrypt, encrypt)"}
	cmd.AddCommand(a.backupListCmd(), a.backupCreateCmd(), a.backupInspectCmd(), a.backupDecryptCmd(), a.backupEncryptCmd())
	return cmd
}

func (a *app) backupListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list SVC",
		Short: "List a service's base backups, oldest first",
		Long: `List a service's base backups, oldest first. With the WAL archived since, each
makes every later time restorable: moat service restore --from SVC --to-time T
works for any T after the end of the oldest one.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			bs, err := cl.ListBackups(cmd.Context(), p, args[0])
			if err != nil {
				return err
			}
			return a.print(bs)
		},
	}
}

func (a *app) backupCreateCmd() *cobra.Command {
	var w waitFlags
	cmd := &cobra.Command{
		Use:   "create SVC [--wait]",
		Short: "Take a base backup of a service now",
		Long: `Take a base backup of a service now (besides the scheduled ones). It is an
operation: with --wait the command follows it and prints the backup's label.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			op, err := cl.CreateBackup(cmd.Context(), p, args[0])
			if err != nil {
				return err
			}
			return a.followOperation(cmd.Context(), cl, p, op, w)
		},
	}
	w.add(cmd, "the backup is stored")
	return cmd
}

// backupInfo is what moat backup inspect prints.
type backupInfo struct {
	Format         backup.Format `json:"format"`
	KeyFingerprint string        `json:"key_fingerprint,omitempty"`
	Compressed     bool          `json:"compressed"`
	SegmentSize    int           `json:"segment_size,omitempty"`
	Segments       int64         `json:"segments,omitempty"`
	HeaderSize     int64         `json:"header_size"`
	PayloadSize    int64         `json:"payload_size"`
	FileSize       int64         `json:"file_size"`
}

func (a *app) backupInspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect FILE",
		Short: "Describe a backup file (format, key fingerprint, sizes) without a key",
		Long: `Describe a backup file without decrypting it: its format (moat1 or pghoa1),
the fingerprint of the public key it is encrypted to (moat1), whether it is
compressed, its segments and sizes. FILE may be - for stdin.

No key is needed, so nothing is verified but the file's structure: a file
inspect describes may still fail to decrypt.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, closeIn, err := a.openInput(args[0])
			if err != nil {
				return err
			}
			defer closeIn()
			info, err := backup.Inspect(in)
			if err != nil {
				return backupError(err, "")
			}
			bi := backupInfo{Format: info.Format, Compressed: info.Compressed, SegmentSize: info.SegmentSize,
				Segments: info.Segments, HeaderSize: info.HeaderSize, PayloadSize: info.PayloadSize, FileSize: info.FileSize}
			if info.Format == backup.FormatMoat1 {
				bi.KeyFingerprint = info.Key.String()
			}
			if a.output == "json" {
				return a.print(bi)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "format:\t%s\n", bi.Format)
			if bi.KeyFingerprint != "" {
				fmt.Fprintf(tw, "key:\t%s\n", bi.KeyFingerprint)
			} else {
				fmt.Fprintf(tw, "key:\t(not recorded by %s)\n", bi.Format)
			}
			fmt.Fprintf(tw, "compressed:\t%t\n", bi.Compressed)
			if bi.Format == backup.FormatMoat1 {
				fmt.Fprintf(tw, "segments:\t%d of %d bytes\n", bi.Segments, bi.SegmentSize)
			}
			fmt.Fprintf(tw, "header size:\t%d\n", bi.HeaderSize)
			fmt.Fprintf(tw, "payload size:\t%d\n", bi.PayloadSize)
			fmt.Fprintf(tw, "file size:\t%d\n", bi.FileSize)
			return tw.Flush()
		},
	}
}

func (a *app) backupDecryptCmd() *cobra.Command {
	var keyFile string
	c := &cobra.Command{
		Use:   "decrypt --key PRIVATE.pem IN OUT",
		Short: "Decrypt a backup file (moat1 or pghoa1, detected) with the service's private key",
		Long: `Decrypt a backup file, moat1 or pghoa1 (detected from the file), with the
service's RSA private key (PEM, PKCS #8 or PKCS #1).

OUT is written only once the whole input has verified: the plaintext goes to
a temporary file beside OUT (mode 0600), renamed to OUT at the end, so a
tampered or truncated file leaves no OUT. IN may be - for stdin. OUT may be -
for stdout: stdout then receives each segment as soon as it verifies, and a
file that fails part way leaves stdout with the verified part before the
error (and exit status 1).`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			pemBytes, err := os.ReadFile(keyFile)
			if err != nil {
				return withHint(fmt.Errorf("read --key: %w", err), "pass the service's private key with --key PRIVATE.pem")
			}
			priv, err := backup.ParsePrivateKeyPEM(pemBytes)
			if err != nil {
				return withHint(fmt.Errorf("--key %s: %w", keyFile, err), "--key takes an RSA private key in PEM (PRIVATE KEY or RSA PRIVATE KEY)")
			}
			in, closeIn, err := a.openInput(args[0])
			if err != nil {
				return err
			}
			defer closeIn()
			if args[1] == "-" {
				if err := archive.Decrypt(a.stdout, in, priv); err != nil {
					return backupError(err, "stdout received only the segments that verified before the error")
				}
				return nil
			}
			err = atomicfile.Write(args[1], 0o600, func(w io.Writer) error { return archive.Decrypt(w, in, priv) })
			if err != nil {
				return backupError(err, args[1]+" was not written")
			}
			return nil
		},
	}
	c.Flags().StringVar(&keyFile, "key", "", "the service's RSA private key, PEM")
	c.MarkFlagRequired("key")
	return c
}

func (a *app) backupEncryptCmd() *cobra.Command {
	var (
		keyFile, format string
		compress        bool
	)
	c := &cobra.Command{
		Use:   "encrypt --key PUBLIC.pem [--format moat1|pghoa1] [--compress] IN OUT",
		Short: "Encrypt a file to a service's public key, as backups are",
		Long: `Encrypt a file to a service's RSA public key (PEM) in a backup format.

moat1 (the default) is what Moat writes: AES-256-CTR and HMAC-SHA256 per
64 KiB segment, optionally zstd-compressed (--compress). pghoa1 is the format
of pghoard/rohmu, for handing files to it; it is weaker (AES-128, one MAC at
the end, so a reader must see the whole file before trusting any of it) and
has no compression flag.

OUT is written atomically (a temporary file renamed at the end). IN may be -
for stdin and OUT - for stdout.`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := backup.Format(format)
			if f != backup.FormatMoat1 && f != backup.FormatPghoa1 {
				return usageErrorf("--format %q is not a format; use moat1 or pghoa1", format)
			}
			if compress && f == backup.FormatPghoa1 {
				return usageErrorf("--compress needs --format moat1: pghoa1 has no compression flag")
			}
			pemBytes, err := os.ReadFile(keyFile)
			if err != nil {
				return withHint(fmt.Errorf("read --key: %w", err), "pass the service's public key with --key PUBLIC.pem")
			}
			pub, err := backup.ParsePublicKeyPEM(pemBytes)
			if err != nil {
				return withHint(fmt.Errorf("--key %s: %w", keyFile, err), "--key takes an RSA public key in PEM (PUBLIC KEY or RSA PUBLIC KEY)")
			}
			in, closeIn, err := a.openInput(args[0])
			if err != nil {
				return err
			}
			defer closeIn()
			opts := archive.EncryptOptions{Format: f, Compress: compress}
			if args[1] == "-" {
				return archive.Encrypt(a.stdout, in, pub, opts)
			}
			return atomicfile.Write(args[1], 0o644, func(w io.Writer) error { return archive.Encrypt(w, in, pub, opts) })
		},
	}
	c.Flags().StringVar(&keyFile, "key", "", "the service's RSA public key, PEM")
	c.Flags().StringVar(&format, "format", string(backup.FormatMoat1), "file format: moat1 or pghoa1")
	c.Flags().BoolVar(&compress, "compress", false, "compress with zstd before encrypting (moat1 only)")
	c.MarkFlagRequired("key")
	return c
}

// openInput opens a file, or stdin for "-".
func (a *app) openInput(name string) (io.Reader, func(), error) {
	if name == "-" {
		return a.stdin, func() {}, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// backupError adds what the user should do about a backup file that
// failed to read; note says what happened to the output.
func backupError(err error, note string) error {
	var hint string
	switch {
	case errors.Is(err, backup.ErrWrongKey):
		hint = "the file is encrypted to another key; moat backup inspect FILE shows its key fingerprint"
	case errors.Is(err, backup.ErrAuth):
		hint = "the file was modified, corrupted or cut short after it was written; do not trust any copy of its content"
	case errors.Is(err, backup.ErrTruncated):
		hint = "the file is incomplete (cut short in transfer or storage); fetch it again"
	case errors.Is(err, backup.ErrFormat):
		hint = "this is not a moat1 or pghoa1 backup file"
	default:
		if note == "" {
			return err
		}
		return withHint(err, note)
	}
	if note != "" {
		hint += "; " + note
	}
	return withHint(err, hint)
}
