import type { Command } from "commander";

/**
 * A bash completion script generated from the command tree itself, so it never lags behind a new
 * command or flag: `source <(molt completion bash)`.
 */
export function bashCompletion(program: Command): string {
  const words = (cmd: Command) => [...cmd.commands.flatMap((c) => [c.name(), ...c.aliases()]), ...cmd.options.map((o) => o.long ?? o.short ?? "").filter(Boolean), "--help"];
  const globals = program.options.map((o) => o.long ?? "").filter(Boolean);
  const cases: string[] = [];
  for (const cmd of program.commands) {
    cases.push(`    ${[cmd.name(), ...cmd.aliases()].join("|")}) echo "${[...words(cmd), ...globals].join(" ")}" ;;`);
    for (const sub of cmd.commands) cases.push(`    "${cmd.name()} ${sub.name()}") echo "${[...words(sub), ...globals].join(" ")}" ;;`);
  }
  return `# bash completion for molt: source <(molt completion bash)
_molt_opts() {
  case "$1" in
    "") echo "${words(program).join(" ")}" ;;
${cases.join("\n")}
  esac
}
_molt() {
  local cur path opts i w
  cur="\${COMP_WORDS[COMP_CWORD]}"
  path=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    [[ "$w" == -* ]] && continue
    path="\${path:+$path }$w"
  done
  # The longest known command path: "package push", else "deploy" (its arguments follow).
  opts="$(_molt_opts "$(echo "$path" | cut -d' ' -f1-2)")"
  [[ -z "$opts" ]] && opts="$(_molt_opts "\${path%% *}")"
  [[ -z "$opts" ]] && opts="${globals.join(" ")}"
  COMPREPLY=( $(compgen -W "$opts" -- "$cur") )
}
complete -o default -F _molt molt
`;
}

/** zsh runs the same function through its bash compatibility layer: `source <(molt completion zsh)`. */
export function zshCompletion(program: Command): string {
  return `# zsh completion for molt: source <(molt completion zsh)
autoload -U +X compinit && compinit
autoload -U +X bashcompinit && bashcompinit
${bashCompletion(program).replace("# bash completion for molt: source <(molt completion bash)\n", "")}`;
}
