package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is the release version; a release build sets it with
// -ldflags "-X main.version=v1.2.3". Otherwise the module version of the
// build info (set by `go install …@v1.2.3`) is used, else "devel".
var version = ""

// buildInfo is what `quorumq version` prints.
type buildInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`   // vcs.revision; "unknown" without VCS stamping
	Modified  bool   `json:"modified"` // vcs.modified: built from a dirty tree
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// readBuildInfo fills buildInfo from the linker flag and
// runtime/debug.ReadBuildInfo.
func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Commit: "unknown", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		if b.Version == "" {
			b.Version = "devel"
		}
		return b
	}
	b.GoVersion = info.GoVersion
	if b.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		b.Version = info.Main.Version
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// String is the one line of --version and the table output.
func (b buildInfo) String() string {
	commit := b.Commit
	if b.Modified {
		commit += " (modified)"
	}
	return fmt.Sprintf("quorumq %s (commit %s, %s, %s)", b.Version, commit, b.GoVersion, b.Platform)
}

func newVersionCmd() *cobra.Command {
	var output outputFormat
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version of this binary",
		Long: `Print the version, the commit it was built from (vcs.revision, with
"(modified)" for a dirty tree) and the Go version, from the binary's build
information. -o json or yaml prints {"version","commit","modified","goVersion","platform"}.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return printBuildInfo(cmd.OutOrStdout(), output, readBuildInfo())
		}),
	}
	output.register(cmd)
	return cmd
}

func printBuildInfo(w io.Writer, format outputFormat, b buildInfo) error {
	if format.structured() {
		doc, err := json.Marshal(b)
		if err != nil {
			return err
		}
		return writeDocument(w, format, doc)
	}
	_, err := fmt.Fprintln(w, b.String())
	return err
}
