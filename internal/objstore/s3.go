package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config configures [NewS3].
type S3Config struct {
	// Endpoint is the service's host[:port], without scheme.
	Endpoint string
	// Insecure selects plain HTTP; the default is HTTPS.
	Insecure bool
	// Region is the bucket's region ("" lets the client discover it).
	Region string
	Bucket string
	// AccessKeyID and SecretAccessKey are static credentials.
	AccessKeyID     string
	SecretAccessKey string
	// PathStyle addresses buckets as endpoint/bucket rather than
	// bucket.endpoint (MinIO, Ceph and most self-hosted services).
	PathStyle bool
	// PartSize is the multipart upload part size, which is also the
	// memory an upload buffers (at least 5 MiB). Zero means 16 MiB.
	PartSize uint64
	// Transport overrides the HTTP transport (tests, custom CAs).
	Transport http.RoundTripper
}

// LogValue keeps the secret out of logs.
func (c S3Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoint", c.Endpoint),
		slog.String("region", c.Region),
		slog.String("bucket", c.Bucket),
		slog.String("access_key_id", c.AccessKeyID),
		slog.String("secret_access_key", "REDACTED"),
	)
}

// S3 is a [Store] in a bucket of an S3-compatible service.
type S3 struct {
	client   *minio.Client
	bucket   string
	partSize uint64
}

var _ Store = (*S3)(nil)

// NewS3 returns a store for cfg.Bucket. It does not contact the service.
func NewS3(cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("open s3 store: endpoint and bucket are required")
	}
	opts := &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKeyID, cfg.SecretAccessKey, ""),
		Secure:    !cfg.Insecure,
		Region:    cfg.Region,
		Transport: cfg.Transport,
	}
	if cfg.PathStyle {
		opts.BucketLookup = minio.BucketLookupPath
	}
	c, err := minio.New(cfg.Endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("open s3 store: %w", err)
	}
	ps := cfg.PartSize
	if ps == 0 {
		ps = 16 << 20
	}
	return &S3{client: c, bucket: cfg.Bucket, partSize: ps}, nil
}

// Put uploads r. S3 makes an object visible only once its upload (single
// or multipart) completes, so Put is atomic. An upload that fails part way
// is aborted.
func (s *S3) Put(ctx context.Context, key string, r io.Reader) error {
	if err := ValidKey(key); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	// Read up to one part: an object that fits is sent with its length in
	// one request (some services refuse uploads without Content-Length);
	// a larger one streams as a multipart upload.
	first := make([]byte, s.partSize)
	n, err := io.ReadFull(ctxReader{ctx, r}, first)
	size := int64(-1)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		size, r = int64(n), bytes.NewReader(first[:n])
	case err != nil:
		return fmt.Errorf("put %s: %w", key, err)
	default:
		r = io.MultiReader(bytes.NewReader(first), r)
	}
	_, err = s.client.PutObject(ctx, s.bucket, key, r, size, minio.PutObjectOptions{
		PartSize:    s.partSize,
		ContentType: "application/octet-stream",
	})
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := ValidKey(key); err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	obj, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, s3Err(err))
	}
	// GetObject is lazy; Stat makes the request and reports a missing key.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, fmt.Errorf("get %s: %w", key, s3Err(err))
	}
	return obj, nil
}

func (s *S3) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := ValidKey(key); err != nil {
		return ObjectInfo{}, fmt.Errorf("stat: %w", err)
	}
	oi, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("stat %s: %w", key, s3Err(err))
	}
	return ObjectInfo{Key: key, Size: oi.Size, ModTime: oi.LastModified}, nil
}

func (s *S3) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	for oi := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if oi.Err != nil {
			return nil, fmt.Errorf("list %q: %w", prefix, s3Err(oi.Err))
		}
		out = append(out, ObjectInfo{Key: oi.Key, Size: oi.Size, ModTime: oi.LastModified})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		if err := s3Err(err); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("delete %s: %w", key, err)
		}
	}
	return nil
}

func s3Err(err error) error {
	switch minio.ToErrorResponse(err).Code {
	case "NoSuchKey", "NotFound":
		return fmt.Errorf("%w (%v)", ErrNotFound, err)
	}
	return err
}
