"""A RUN command as the shell sees it: simple commands made of words, not a line of text to match words in.

`shlex` (POSIX mode, with punctuation) splits the script; operators (`&&`, `||`, `;`, `|`, `&`, parentheses)
end a simple command; shell keywords (`if`, `then`, `do`, ...), leading `VAR=value` assignments and wrappers
(`sudo`, `env`, `exec`, `xargs`, ...) are peeled off so that the command's name is the program it runs, and
`sh -c '...'` is read as the script it carries. So `apk add make` is apk adding a package called make,
`echo "pip install x"` is echo, and `go run build.go build` is not `go build`. Never raises: a script shlex
cannot read (unbalanced quotes) is split on blanks and operators instead.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_OPERATOR = re.compile(r"^[;&|()<>]+$")
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "(", ")", ";;", "|&", "{", "}", "!", "((", "))"})
_KEYWORDS = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "time", "!"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Programs that run the rest of their words as a command (after their own options).
_WRAPPERS = frozenset(
    {"sudo", "env", "exec", "nohup", "command", "nice", "stdbuf", "timeout", "xargs", "eval"}
)
_SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh"})
_REDIRECT = re.compile(r"^\d*[<>]")
_REDIRECT_OPERATOR = re.compile(r"^(?:[<>]+&?|&>>?|[<>]+\(?)$")


@dataclass(frozen=True)
class Command:
    """One simple command: the program's name (basename) and its arguments, quotes removed."""

    name: str
    args: tuple[str, ...]

    def option(self, *names: str) -> bool:
        """Whether any of the long/short options is given (`--no-cache`, `--no-cache=true`, `-y`)."""
        for arg in self.args:
            if arg == "--":
                return False
            if any(arg == name or arg.startswith(name + "=") for name in names):
                return True
            short = [name[1] for name in names if len(name) == 2 and name[0] == "-" and name[1] != "-"]
            if short and re.fullmatch(r"-[A-Za-z]+", arg) and any(s in arg[1:] for s in short):
                return True
        return False

    def option_prefix(self, full: str, shortest: str) -> bool:
        """A long option that may be abbreviated (pip accepts `--no-cache` for `--no-cache-dir`)."""
        return any(
            arg.split("=", 1)[0].startswith(shortest) and full.startswith(arg.split("=", 1)[0])
            for arg in self.args
        )

    def positionals(self, takes_value: Iterable[str] = ()) -> list[str]:
        """Arguments that are not options (skipping the value of options listed in `takes_value`)."""
        valued = set(takes_value)
        result: list[str] = []
        skip = False
        for arg in self.args:
            if skip:
                skip = False
                continue
            if arg.startswith("-") and arg != "-":
                if arg in valued:
                    skip = True
                continue
            result.append(arg)
        return result

    def subcommand(self, takes_value: Iterable[str] = ()) -> str | None:
        words = self.positionals(takes_value)
        return words[0] if words else None

    @property
    def text(self) -> str:
        return " ".join((self.name, *self.args))


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:
        # Unbalanced quotes: split on blanks, keeping operators apart.
        return [t for t in re.split(r"\s+|(&&|\|\||;|\|)", line) if t]


def _logical_lines(script: str) -> list[str]:
    """Join backslash continuations and drop comment lines (heredoc bodies are scripts of many lines)."""
    lines: list[str] = []
    current = ""
    for raw in script.splitlines():
        stripped = raw.strip()
        if not current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\") and not stripped.endswith("\\\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current)
        current = ""
    if current.strip():
        lines.append(current)
    return lines


def _strip_comment(tokens: list[str]) -> list[str]:
    for index, token in enumerate(tokens):
        if token.startswith("#"):
            return tokens[:index]
    return tokens


def _simple_commands(tokens: Sequence[str]) -> Iterable[list[str]]:
    current: list[str] = []
    redirect_target = False
    for token in tokens:
        if redirect_target:
            redirect_target = False
            continue
        if _REDIRECT_OPERATOR.match(token):
            # `> file`, `2>&1`, `< in`: the next word is the redirection's target, not an argument.
            redirect_target = True
            if current and current[-1].isdigit():
                current.pop()  # the file descriptor of `2>`
            continue
        if token in _SEPARATORS or _OPERATOR.match(token):
            if current:
                yield current
            current = []
            continue
        current.append(token)
    if current:
        yield current


def _peel(words: list[str], depth: int) -> list[Command]:
    """The command the words run, with wrappers, keywords and assignments removed; `sh -c` recursed."""
    index = 0
    while index < len(words):
        word = words[index]
        if word in _KEYWORDS or _ASSIGNMENT.match(word):
            index += 1
            continue
        name = word.rsplit("/", 1)[-1]
        if name in _WRAPPERS:
            index += 1
            # Options of the wrapper (`sudo -u x`, `xargs -r`, `timeout 10`) come before the command.
            while index < len(words) and (
                words[index].startswith("-") or _ASSIGNMENT.match(words[index]) or words[index].isdigit()
            ):
                if words[index] in ("-u", "-g", "-n", "-I", "-L", "-P", "-s"):
                    index += 1
                index += 1
            continue
        if name in ("for", "case", "select", "function") or name.endswith(")"):
            return []
        args = words[index + 1 :]
        if name in _SHELLS and "-c" in args and depth < 3:
            script = args[args.index("-c") + 1] if args.index("-c") + 1 < len(args) else ""
            return commands(script, depth + 1)
        return [Command(name, tuple(a for a in args if not _REDIRECT.match(a)))]
    return []


def commands(script: str, depth: int = 0) -> list[Command]:
    """Every simple command of a shell script, in order."""
    found: list[Command] = []
    for line in _logical_lines(script):
        for words in _simple_commands(_strip_comment(_tokens(line))):
            found += _peel(words, depth)
    return found


def exec_commands(words: Sequence[str]) -> list[Command]:
    """An exec-form RUN (`["sh", "-c", "..."]` or `["apk", "add", ...]`) as commands."""
    if not words:
        return []
    return _peel(list(words), 0)
