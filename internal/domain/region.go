package domain

import (
	"slices"
	"strings"
)

// Region is a place the platform runs in, with its availability zones.
type Region struct {
	Code string   `json:"code"`
	AZs  []string `json:"azs"`
}

// Catalog is the set of regions the platform supports (a setting).
type Catalog struct {
	Regions []Region
}

// DefaultCatalog is us-east-1 and eu-west-1, each with AZs a, b and c.
func DefaultCatalog() Catalog {
	return Catalog{Regions: []Region{
		{Code: "us-east-1", AZs: []string{"us-east-1a", "us-east-1b", "us-east-1c"}},
		{Code: "eu-west-1", AZs: []string{"eu-west-1a", "eu-west-1b", "eu-west-1c"}},
	}}
}

// Lookup returns the supported region with code, or an error for field that
// names the supported ones.
func (c Catalog) Lookup(field, code string) (Region, error) {
	for _, r := range c.Regions {
		if r.Code == code {
			return r, nil
		}
	}
	hint := "supported regions: " + strings.Join(c.Codes(), ", ")
	if code == "" {
		return Region{}, Invalidf(CodeRequired, field, hint, "a region is required")
	}
	if !IsAWSRegion(code) {
		return Region{}, Invalidf(CodeInvalidRegion, field, hint, "%q is not a region code", code)
	}
	return Region{}, Invalidf(CodeUnsupportedRegion, field, hint, "region %q is not supported by this platform", code)
}

// Codes lists the supported region codes in catalog order.
func (c Catalog) Codes() []string {
	out := make([]string, len(c.Regions))
	for i, r := range c.Regions {
		out[i] = r.Code
	}
	return out
}

// awsRegions is every AWS region code (commercial, China and GovCloud), the
// set a peer network may live in.
var awsRegions = []string{
	"af-south-1",
	"ap-east-1", "ap-east-2",
	"ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
	"ap-south-1", "ap-south-2",
	"ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-6", "ap-southeast-7",
	"ca-central-1", "ca-west-1",
	"cn-north-1", "cn-northwest-1",
	"eu-central-1", "eu-central-2",
	"eu-north-1",
	"eu-south-1", "eu-south-2",
	"eu-west-1", "eu-west-2", "eu-west-3",
	"il-central-1",
	"me-central-1", "me-south-1",
	"mx-central-1",
	"sa-east-1",
	"us-east-1", "us-east-2",
	"us-gov-east-1", "us-gov-west-1",
	"us-west-1", "us-west-2",
}

// AWSRegions returns every AWS region code.
func AWSRegions() []string { return slices.Clone(awsRegions) }

// IsAWSRegion reports whether code is a real AWS region code.
func IsAWSRegion(code string) bool { return slices.Contains(awsRegions, code) }

// ValidatePeerRegion checks a peer network's region: any real AWS region.
func ValidatePeerRegion(code string) error {
	const field = "peer_region"
	if code == "" {
		return Invalidf(CodeRequired, field, "give the AWS region of the peer VPC, e.g. us-east-1", "a peer region is required")
	}
	if !IsAWSRegion(code) {
		return Invalidf(CodeInvalidRegion, field, "use an AWS region code such as us-east-1 or eu-west-1", "%q is not an AWS region code", code)
	}
	return nil
}
