#!/usr/bin/env python3
"""Generate ``docs/cli.md`` from ``pyostree.cli.build_parser()``.

Every command and subcommand is walked recursively; for each one the reference shows its
synopsis, description, positional arguments and options with their help, defaults and choices.
The output depends only on the parser (not on the terminal width or the Python version's help
formatter), so ``tests/test_docs.py`` can compare it with the checked-in file.

Usage::

    python3 docs/gen_cli_reference.py           # rewrite docs/cli.md
    python3 docs/gen_cli_reference.py --check   # exit 1 if docs/cli.md is out of date
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "cli.md"
REGENERATE = "python3 docs/gen_cli_reference.py"

if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


@attrs.frozen
class Command:
    """One (sub)command: its words after ``pyostree``, aliases, summary and parser."""

    words: tuple[str, ...]
    aliases: tuple[str, ...]
    summary: str
    parser: argparse.ArgumentParser

    @property
    def name(self) -> str:
        return " ".join(("pyostree", *self.words))


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[
        argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def walk(parser: argparse.ArgumentParser, words: tuple[str, ...] = (),
         aliases: tuple[str, ...] = (), summary: str = "") -> Iterator[Command]:
    """The command of ``parser`` and, depth first in registration order, all below it."""
    yield Command(words, aliases, summary, parser)
    sub = _subparsers(parser)
    if sub is None:
        return
    help_of = {choice.dest: choice.help or "" for choice in sub._choices_actions}
    names_of: dict[int, list[str]] = {}
    for name, child in sub.choices.items():
        names_of.setdefault(id(child), []).append(name)
    seen: set[int] = set()
    for name, child in sub.choices.items():
        if id(child) in seen:
            continue
        seen.add(id(child))
        others = tuple(n for n in names_of[id(child)] if n != name)
        yield from walk(child, (*words, name), others, help_of.get(name, ""))


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar)
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    if action.option_strings:
        return str(action.dest).upper()
    return str(action.dest)


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _arg_form(action: argparse.Action) -> str:
    """How an argument is written: ``NAME``, ``[NAME]``, ``NAME [NAME ...]`` …"""
    meta = _metavar(action)
    nargs = action.nargs
    if nargs is None:
        return meta
    if nargs == argparse.OPTIONAL:
        return f"[{meta}]"
    if nargs == argparse.ZERO_OR_MORE:
        return f"[{meta} ...]"
    if nargs == argparse.ONE_OR_MORE:
        return f"{meta} [{meta} ...]"
    if isinstance(nargs, int):
        return " ".join([meta] * nargs)
    return meta


def _visible(action: argparse.Action) -> bool:
    return action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and _visible(a)]


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not a.option_strings and _visible(a)
            and not isinstance(a, argparse._SubParsersAction)]


def synopsis(command: Command) -> str:
    parts = [command.name]
    if _options(command.parser):
        parts.append("[OPTIONS]")
    parts += [_arg_form(a) for a in _positionals(command.parser)]
    if _subparsers(command.parser) is not None:
        parts.append("SUBCOMMAND ...")
    return " ".join(parts)


def _option_form(action: argparse.Action) -> str:
    names = ", ".join(action.option_strings)
    if not _takes_value(action):
        return names
    return f"{names} {_arg_form(action)}"


def _default_note(action: argparse.Action) -> str:
    default = action.default
    if (default is None or default is argparse.SUPPRESS or isinstance(default, bool)
            or default in ([], "") or isinstance(action, argparse._VersionAction)):
        return ""
    text = f"{action.help or ''}"
    if "default" in text:  # the help already says it
        return ""
    return f" (default: `{default}`)"


def _describe(action: argparse.Action) -> str:
    text = " ".join((action.help or "").split())
    extra = _default_note(action)
    if isinstance(action, argparse._AppendAction) and "repeatable" not in text:
        extra += " (repeatable)"
    return (text + extra).strip()


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _item(form: str, text: str) -> str:
    return f"- `{form}`: {_escape(text)}" if text else f"- `{form}`"


def render_command(command: Command) -> str:
    level = min(2 + max(len(command.words) - 1, 0), 4)
    lines = [f"{'#' * level} `{command.name}`", ""]
    parser = command.parser
    description = " ".join((parser.description or command.summary or "").split())
    if description:
        lines += [_escape(description), ""]
    if command.aliases:
        alias_words = [" ".join(("pyostree", *command.words[:-1], a)) for a in command.aliases]
        lines += ["Alias: " + ", ".join(f"`{a}`" for a in alias_words) + ".", ""]
    lines += ["```", synopsis(command), "```", ""]
    positionals = _positionals(parser)
    if positionals:
        lines += ["Arguments:", ""]
        lines += [_item(_arg_form(a), _describe(a)) for a in positionals]
        lines.append("")
    options = _options(parser)
    if options:
        lines += ["Options:", ""]
        lines += [_item(_option_form(a), _describe(a)) for a in options]
        lines.append("")
    for group in parser._mutually_exclusive_groups:
        names = [a.option_strings[-1] for a in group._group_actions if _visible(a)]
        if len(names) > 1:
            lines += ["Only one of " + ", ".join(f"`{n}`" for n in names) + " may be given.", ""]
    sub = _subparsers(parser)
    if sub is not None:
        lines += ["Subcommands:", ""]
        lines += [_item(choice.dest, " ".join((choice.help or "").split()))
                  for choice in sub._choices_actions]
        lines.append("")
    return "\n".join(lines)


def render() -> str:
    """The complete text of ``docs/cli.md``."""
    from pyostree.cli import build_parser

    commands = list(walk(build_parser()))
    header = [
        "# pyostree command-line reference",
        "",
        f"Generated from `pyostree.cli.build_parser()` by `{REGENERATE}`; do not edit by",
        "hand. Commands and options follow the `ostree` command line; the",
        "[user guide](user-guide.md) shows them in use. `--repo` and `--sysroot` are accepted",
        "before or after the subcommand words where a command has them.",
        "",
        "Commands:",
        "",
    ]
    header += [_item(c.name, " ".join(c.summary.split()))
               for c in commands[1:] if len(c.words) == 1]
    header.append("")
    body = [render_command(c) for c in commands]
    return "\n".join(header) + "\n" + "\n".join(body).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/cli.md from the pyostree parser.")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if docs/cli.md differs from the generated text")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        try:
            current = args.output.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = ""
        if current != text:
            print(f"{args.output} is out of date; run: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
