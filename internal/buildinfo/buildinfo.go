// Package buildinfo reports the binary's version, commit and Go version, from
// the module build information the go command embeds (and, for release
// builds, from -ldflags "-X .../buildinfo.version=v1.2.3").
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// version may be set at link time; otherwise the module version is used.
var version = ""

// Info describes the running binary.
type Info struct {
	Version   string
	Commit    string
	Modified  bool // built from a work tree with uncommitted changes
	GoVersion string
}

// Read returns the binary's build information.
func Read() Info {
	i := Info{Version: version, Commit: "unknown", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if i.Version == "" {
			i.Version = "unknown"
		}
		return i
	}
	if i.Version == "" {
		i.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Commit = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	return i
}

// String renders the information on one line.
func (i Info) String() string {
	s := "ensure-user " + i.Version + " commit " + i.Commit
	if i.Modified {
		s += " (modified)"
	}
	return s + " " + i.GoVersion
}
