package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/internal/cli"
)

// cmdToken makes join tokens with the CA key of the node on this machine:
// a token is checked by any node with that key, so making one needs no
// call to the cluster.
func cmdToken(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprintln(stderr, "Usage: difused token create [-d DIR | -b ADDR] [-role node|client|admin] [-ttl DURATION]")
		return cli.ExitUsage
	}
	fs := flag.NewFlagSet("difused token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := memberDir(fs)
	addr := fs.String("b", defaultGRPC, "gRPC `address` of the node on this machine whose CA key signs (for its default data directory)")
	role := fs.String("role", string(identity.RoleClient), "what the token admits: node, client (a mount) or admin")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token admits (0: until the CA changes)")
	if err := fs.Parse(args[1:]); err != nil {
		return cli.ExitUsage
	}
	r, err := identity.ParseRole(*role)
	if err != nil || *ttl < 0 {
		fmt.Fprintf(stderr, "difused token create: -role must be node, client or admin, -ttl not negative\n")
		return cli.ExitUsage
	}
	id, err := memberIdentity(*dir, *addr)
	if err == nil && !id.CanIssue() {
		err = fmt.Errorf("the identity found is a %s's; only a node holds the CA key", id.Role)
	}
	if err != nil {
		fmt.Fprintf(stderr, "difused token create: %v\n", err)
		return cli.ExitFailure
	}
	tok, err := id.NewToken(r, *ttl)
	if err != nil {
		fmt.Fprintf(stderr, "difused token create: %v\n", err)
		return cli.ExitFailure
	}
	fmt.Fprintln(stdout, tok.String())
	return 0
}
