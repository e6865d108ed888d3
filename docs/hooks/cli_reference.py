"""MkDocs hook: the command-line reference in docs/cli.md is the `--help` text of `jrft` and of each of its commands,
taken from the parser the command itself builds (`jrft_desktop.cli.build_parser`), so the page cannot drift from
the code. The page holds MARKER where the reference goes; a page without it fails the build."""

from __future__ import annotations

import argparse
import os
from contextlib import contextmanager

from mkdocs.exceptions import PluginError

PAGE = "cli.md"
MARKER = "<!-- cli-reference -->"
WIDTH = 100  # columns of the help text, whatever the terminal that builds the site


@contextmanager
def _plain_help_environment():
    """argparse wraps help to $COLUMNS (and Python 3.14 colours it unless NO_COLOR is set): fix both while the help
    text is formatted, then put the environment back."""
    wanted = {"COLUMNS": str(WIDTH), "NO_COLOR": "1"}
    previous = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _commands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of every subcommand, in the order `jrft --help` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return [(name, helps.get(name, ""), command) for name, command in action.choices.items()]
    return []


def _block(text: str) -> list[str]:
    return ["```text", text.rstrip(), "```"]


def reference_markdown() -> str:
    """The reference: `jrft --help`, then a section per command with its one-line summary and its `--help`."""
    try:
        from jrft_desktop.cli import build_parser  # only here: loading the hook must not import the package

        parser = build_parser()
    except Exception as error:  # say which page needed it; the cause stays chained for --verbose
        raise PluginError(f"docs/{PAGE}: cannot build the `jrft` parser for the CLI reference: "
                          f"{type(error).__name__}: {error}") from error
    with _plain_help_environment():
        lines = ["## jrft", "", *_block(parser.format_help())]
        for name, summary, command in _commands(parser):
            lines += ["", f"## jrft {name}", ""]
            lines += [summary, ""] if summary else []
            lines += _block(command.format_help())
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"docs/{PAGE} lost its marker {MARKER}: the CLI reference has nowhere to go.")
    return markdown.replace(MARKER, reference_markdown())
