// Command quorumq is the quorumq server and its command-line client.
package main

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/quorumq/quorumq/server/node"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		node.ExecWithHugePages() // memtables in huge pages: see its comment
	}
	if err := newRoot().Execute(); err != nil {
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "quorumq",
		Short:         "A replicated, SQS-style message queue",
		SilenceUsage:  true,
		SilenceErrors: false,
		Version:       readBuildInfo().String(),
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			warnDeprecated(cmd)
			return applyEnv(cmd)
		},
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetErrPrefix("quorumq:")
	root.AddCommand(newServeCmd(), newQueueCmd(), newSendCmd(), newReceiveCmd(), newDeleteCmd(), newNackCmd(), newPeekCmd(), newMessageCmd(), newClusterCmd(), newCredentialsCmd(), newTopicCmd(),
		newTokenCmd(), newBenchCmd(), newVersionCmd())
	// cobra adds `completion bash|zsh|fish|powershell` itself on Execute;
	// added now so that its help lists the exit codes too.
	root.InitDefaultCompletionCmd()
	withExitCodes(root)
	return root
}

// deprecatedFlags are the hidden older spellings, with what to use
// instead. (Not pflag's MarkDeprecated: cobra prints its notice to the
// command's output writer, and these must never touch standard output.)
var deprecatedFlags = map[string]string{"json": "-o json", "endpoints": "--endpoint"}

// warnDeprecated notes on standard error each older spelling given.
func warnDeprecated(cmd *cobra.Command) {
	for _, name := range slices.Sorted(maps.Keys(deprecatedFlags)) {
		if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
			fmt.Fprintf(cmd.ErrOrStderr(), "quorumq: --%s is deprecated, use %s\n", name, deprecatedFlags[name])
		}
	}
}

// flagAliases pairs each hidden, deprecated flag spelling with the flag it
// stands for: giving either on the command line keeps the environment
// from setting the other.
var flagAliases = map[string]string{"endpoints": "endpoint", "endpoint": "endpoints", "json": "output", "output": "json"}

// applyEnv lets every flag come from QUORUMQ_<FLAG> (dashes as
// underscores) unless it was given on the command line.
func applyEnv(cmd *cobra.Command) error {
	var err error
	flags := cmd.Flags()
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if _, old := deprecatedFlags[f.Name]; err != nil || f.Changed || old {
			return
		}
		if alias := flags.Lookup(flagAliases[f.Name]); alias != nil && alias.Changed {
			return
		}
		name := "QUORUMQ_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if e := cmd.Flags().Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", name, e)
			}
		}
	})
	return err
}
