package dns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"time"

	miekg "github.com/miekg/dns"

	"github.com/moatdb/moat/internal/atomicfile"
)

// zoneFileVersion is the version of the zone file format WriteZoneFile
// writes and ReadZoneFile reads.
const zoneFileVersion = 1

// zoneFile is a zone as a file: what a DNS server in another process
// (moat dns serve) needs to answer as the control plane's would.
type zoneFile struct {
	Version     int      `json:"version"`
	Origin      string   `json:"origin"`
	Serial      uint32   `json:"serial"`
	Nameservers []string `json:"nameservers"`
	Records     []Record `json:"records"`
}

// MarshalZone encodes z in the zone file format (versioned JSON).
func MarshalZone(z *Zone) ([]byte, error) {
	f := zoneFile{Version: zoneFileVersion, Origin: z.origin, Serial: z.serial, Nameservers: z.Nameservers(), Records: z.Records()}
	if f.Records == nil {
		f.Records = []Record{}
	}
	return json.MarshalIndent(f, "", "\t")
}

// UnmarshalZone decodes a zone file, checking it as Build checks its
// input: a valid origin, nameservers and names inside it, IPv4 addresses.
// Unknown fields and other versions are refused.
func UnmarshalZone(b []byte) (*Zone, error) {
	var f zoneFile
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&f); err != nil {
		return nil, fmt.Errorf("zone file: %w", err)
	}
	if f.Version != zoneFileVersion {
		return nil, fmt.Errorf("zone file: version %d, want %d", f.Version, zoneFileVersion)
	}
	o, err := canonicalOrigin(f.Origin)
	if err != nil {
		return nil, fmt.Errorf("zone file: %w", err)
	}
	if o != f.Origin || len(f.Nameservers) == 0 {
		return nil, fmt.Errorf("zone file: origin %q not canonical, or no nameservers", f.Origin)
	}
	z := &Zone{origin: o, serial: f.Serial, hosts: map[string][]netip.Addr{}, ents: map[string]bool{}}
	for _, ns := range f.Nameservers {
		if _, ok := miekg.IsDomainName(ns); !ok || ns != miekg.CanonicalName(ns) || slices.Contains(z.ns, ns) {
			return nil, fmt.Errorf("zone file: nameserver %q: not a canonical domain name, or repeated", ns)
		}
		z.ns = append(z.ns, ns)
	}
	for _, r := range f.Records {
		if _, ok := miekg.IsDomainName(r.Name); !ok || r.Name != miekg.CanonicalName(r.Name) || !miekg.IsSubDomain(o, r.Name) {
			return nil, fmt.Errorf("zone file: record %q: not a canonical name in %s", r.Name, o)
		}
		if !r.Addr.Is4() {
			return nil, fmt.Errorf("zone file: record %s: address %s: only IPv4 is served", r.Name, r.Addr)
		}
		z.add(r.Name, r.Addr)
	}
	z.findENTs()
	return z, nil
}

// WriteZoneFile writes z to path atomically (readers see the old zone or
// the new one, never a part).
func WriteZoneFile(path string, z *Zone) error {
	b, err := MarshalZone(z)
	if err != nil {
		return fmt.Errorf("write zone file: %w", err)
	}
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write zone file: %w", err)
	}
	return nil
}

// ReadZoneFile reads the zone WriteZoneFile wrote to path.
func ReadZoneFile(path string) (*Zone, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	z, err := UnmarshalZone(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return z, nil
}

// FollowZoneFile serves the zone in path: it loads it now and again
// whenever the file changes (checked every interval, and at once on each
// receive from reload, which may be nil; WriteZoneFile replaces it by a
// rename), and swaps it in. Until the file exists the server
// answers SERVFAIL; a file that cannot be read or decoded is logged and the
// last good zone keeps being served, so the server answers from the last
// zone it holds whatever happens to the writer. It returns nil when ctx is
// done.
func (s *Server) FollowZoneFile(ctx context.Context, path string, interval time.Duration, reload <-chan struct{}) error {
	var last os.FileInfo
	var lastErr string
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		fi, err := os.Stat(path)
		switch {
		case err == nil && last != nil && os.SameFile(fi, last) && fi.ModTime().Equal(last.ModTime()) && fi.Size() == last.Size():
			// unchanged
		case errors.Is(err, fs.ErrNotExist) && last == nil:
			// not written yet
		default:
			var z *Zone
			if err == nil {
				z, err = ReadZoneFile(path)
			}
			if err == nil {
				err = s.SetZone(z)
			}
			if err != nil {
				if err.Error() != lastErr {
					s.log.Error("dns zone file not loaded; serving the last zone", "path", path, "err", err)
					lastErr = err.Error()
				}
				break
			}
			last, lastErr = fi, ""
			s.log.Debug("dns zone loaded", "path", path, "serial", z.Serial(), "records", len(z.hosts))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-reload:
		}
	}
}
