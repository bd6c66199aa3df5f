package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// CompletionCmd prints a shell's completion script. The script calls the
// binary back with COMP_LINE set (posener/complete's protocol), and main
// answers with kongplete from the command line's own model, so completions
// never fall behind the flags.
type CompletionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

func (c *CompletionCmd) Help() string {
	return "Examples:\n\n" +
		"    source <(ippool completion bash)              # this shell; add it to ~/.bashrc for every one\n" +
		"    ippool completion zsh > \"${fpath[1]}/_ippool\"\n" +
		"    ippool completion fish > ~/.config/fish/completions/ippool.fish"
}

// completionScripts are the shells' hooks, as kongplete's installer writes
// them; BIN is the binary's absolute path.
var completionScripts = map[string]string{
	"bash": "complete -C BIN ippool\n",
	"zsh":  "autoload -U +X bashcompinit && bashcompinit\ncomplete -C BIN ippool\n",
	"fish": `function __complete_ippool
    set -lx COMP_LINE (commandline -cp)
    test -z (commandline -ct)
    and set COMP_LINE "$COMP_LINE "
    BIN
end
complete -f -c ippool -a "(__complete_ippool)"
`,
}

func (c *CompletionCmd) Run(cli *CLI) error {
	bin, err := os.Executable()
	if err == nil {
		bin, err = filepath.Abs(bin)
	}
	if err != nil {
		return fmt.Errorf("finding this binary's path for the script: %w", err)
	}
	_, err = fmt.Fprint(stdout, strings.ReplaceAll(completionScripts[c.Shell], "BIN", bin))
	return err
}
