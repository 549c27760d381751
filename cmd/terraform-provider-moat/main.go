// Command terraform-provider-moat is Moat's Terraform provider (source
// address moatdb/moat); Terraform starts it as a plugin.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/moatdb/moat/internal/terraform"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	debug := flag.Bool("debug", false, "run with support for debuggers (prints TF_REATTACH_PROVIDERS)")
	flag.Parse()
	err := providerserver.Serve(context.Background(), terraform.New(version), providerserver.ServeOpts{Address: terraform.Address, Debug: *debug})
	if err != nil {
		log.Fatal(err)
	}
}
