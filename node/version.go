package node

import "runtime/debug"

// Version returns the build's version: the module version when built from a
// tagged module, else the VCS revision it was built from (with "+dirty" for
// a modified tree), else "dev".
func Version() string { return buildVersion }

var buildVersion = func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "" {
		return "dev"
	}
	return rev[:min(12, len(rev))] + dirty
}()
