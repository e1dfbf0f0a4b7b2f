package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/difuse/difuse/access"
	"github.com/difuse/difuse/client"
	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/internal/cli"
	"github.com/difuse/difuse/node"
)

const tokenUsage = `Usage: difused token create [-d DIR] [-b ADDR] [-role ROLE] [-ttl DURATION] [-note TEXT]
       difused token list [-d DIR] [-b ADDR]
       difused token revoke [-d DIR] [-b ADDR] ID`

// cmdToken makes, lists and revokes tokens. The CA key of the node on
// this machine signs a new token, and the cluster's access record
// (package access) keeps it, so that it can be listed and revoked.
func cmdToken(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, tokenUsage)
		return cli.ExitUsage
	}
	fs, timeout, dir := clientFlags("token "+args[0], stderr)
	addr := fs.String("b", defaultGRPC, "gRPC `address` of the node on this machine (whose CA key signs, for its default data directory)")
	switch args[0] {
	case "create":
		role := fs.String("role", string(identity.RoleClient), "what the token is for: node, client (a mount) or admin (joins and HTTP); read or write (HTTP only)")
		ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid (0: until revoked)")
		note := fs.String("note", "", "what the token is for, shown by token list")
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
			return cli.ExitUsage
		}
		r, err := identity.ParseRole(*role)
		if err != nil || *ttl < 0 {
			fmt.Fprintf(stderr, "difused token create: -role must be node, client, admin, read or write, -ttl not negative\n")
			return cli.ExitUsage
		}
		return tokenCreate(*dir, *addr, *timeout, r, *ttl, *note, stdout, stderr)
	case "list", "revoke":
		if err := fs.Parse(args[1:]); err != nil || (args[0] == "list") != (fs.NArg() == 0) || fs.NArg() > 1 {
			fmt.Fprintln(stderr, tokenUsage)
			return cli.ExitUsage
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		c, err := dialCluster(ctx, *dir, []string{*addr})
		if err == nil {
			defer c.Close()
			if args[0] == "list" {
				err = tokenList(ctx, c, stdout)
			} else {
				err = access.Revoke(ctx, c, fs.Arg(0), time.Now())
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "difused token %s: %v\n", args[0], err)
			return cli.ExitFailure
		}
		if args[0] == "revoke" {
			fmt.Fprintf(stdout, "token %s revoked: every node refuses it within %s\n", fs.Arg(0), node.AccessRefresh)
		}
		return 0
	}
	fmt.Fprintln(stderr, tokenUsage)
	return cli.ExitUsage
}

// tokenCreate makes a token, records it in the cluster and prints it.
func tokenCreate(dir, addr string, timeout time.Duration, r identity.Role, ttl time.Duration, note string, stdout, stderr io.Writer) int {
	id, err := memberIdentity(dir, addr)
	if err == nil && !id.CanIssue() {
		err = fmt.Errorf("the identity found is a %s's; only a node holds the CA key", id.Role)
	}
	var tok identity.Token
	if err == nil {
		tok, err = id.NewToken(r, ttl)
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var c *client.Cluster
		if c, err = dialCluster(ctx, dir, []string{addr}); err == nil {
			err = access.RecordToken(ctx, c, access.Token{ID: tok.IDString(), Role: r, Expires: tok.Expires, Created: time.Now().UTC().Truncate(time.Second), Note: note})
			c.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "difused token create: %v\n", err)
		return cli.ExitFailure
	}
	fmt.Fprintln(stdout, tok.String())
	return 0
}

// tokenList prints the tokens the cluster's access record holds.
func tokenList(ctx context.Context, c *client.Cluster, w io.Writer) error {
	ts, err := access.Tokens(ctx, c)
	if err != nil {
		return err
	}
	slices.SortFunc(ts, func(a, b access.Token) int { return a.Created.Compare(b.Created) })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tCREATED\tEXPIRES\tSTATE\tNOTE")
	date := func(t time.Time, none string) string {
		if t.IsZero() {
			return none
		}
		return t.UTC().Format(time.RFC3339)
	}
	now := time.Now()
	for _, t := range ts {
		state := "valid"
		switch {
		case !t.Revoked.IsZero():
			state = "revoked " + date(t.Revoked, "")
		case !t.Expires.IsZero() && now.After(t.Expires):
			state = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, cmp.Or(string(t.Role), "-"), date(t.Created, "-"), date(t.Expires, "never"), state, strings.ReplaceAll(t.Note, "\t", " "))
	}
	return tw.Flush()
}

// cmdRemove removes a node that is gone for good: its certificate is
// refused from then on, so it cannot come back with its old files, and
// healing copies what it held elsewhere once its grace time has passed.
func cmdRemove(args []string, stdout, stderr io.Writer) int {
	fs, timeout, dir := clientFlags("remove", stderr)
	addr := fs.String("b", defaultGRPC, "gRPC `address` of a node of the cluster")
	force := fs.Bool("force", false, "remove the node even if it answers")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: difused remove [-d DIR] [-b ADDR] [-force] NODE (its gRPC address)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fs.Usage()
		return cli.ExitUsage
	}
	victim := fs.Arg(0)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, err := dialCluster(ctx, *dir, []string{*addr})
	if err != nil {
		fmt.Fprintf(stderr, "difused remove: %v\n", err)
		return cli.ExitFailure
	}
	defer c.Close()
	if !*force && answers(*dir, victim) {
		fmt.Fprintf(stderr, "difused remove: %s answers: make it leave (difused leave -b %s), or remove it anyway with -force\n", victim, victim)
		return cli.ExitFailure
	}
	if err := access.Remove(ctx, c, victim, time.Now().UTC()); err != nil {
		fmt.Fprintf(stderr, "difused remove: %v\n", err)
		return cli.ExitFailure
	}
	fmt.Fprintf(stdout, "%s removed: every node refuses its certificate within %s; healing copies what it held once its grace time passes\n", victim, node.AccessRefresh)
	return 0
}

// answers reports whether the node at addr answers a status request
// within a few seconds.
func answers(dir, addr string) bool {
	c, err := dial(dir, addr)
	if err != nil {
		return false
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err = c.Status(ctx)
	return err == nil
}
