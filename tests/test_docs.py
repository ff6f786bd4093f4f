"""The docs stay honest: links and anchors resolve, every `twostage ...` command shown in a code
block parses with the real CLI parser (nothing is executed), and every long option the CLI
defines is mentioned somewhere in README.md or docs/."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from twostage.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
# What starts a shown command: `twostage`, `.venv/bin/twostage` or `-m twostage` (torchrun).
COMMAND = re.compile(r"^(?:\S*/)?twostage\s|^twostage$|\s-m\s+twostage\s")


def split_fences(text: str) -> tuple[list[str], list[list[str]]]:
    """The lines outside fenced code blocks, and the lines of each block."""
    prose, blocks, block = [], [], None
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            if block is None:
                block = []
            else:
                blocks.append(block)
                block = None
        elif block is None:
            prose.append(line)
        else:
            block.append(line)
    return prose, blocks


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor in a Markdown text, with GitHub's -1, -2 for repeats."""
    seen: dict[str, int] = {}
    result = set()
    for line in split_fences(text)[0]:
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = github_anchor(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(path: Path, text: str) -> list[str]:
    """The relative links and #anchors of `text` (a file at `path`) that resolve to nothing."""
    broken = []
    for line in split_fences(text)[0]:
        for match in LINK.finditer(re.sub(r"`[^`]*`", "", line)):
            target = match.group(1) or match.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # http:, https:, mailto:
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                broken.append(f"{path.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md":
                own = text if dest == path else dest.read_text(encoding="utf-8")
                if anchor not in anchors(own):
                    broken.append(f"{path.name}: {target} (no such heading)")
    return broken


def shown_commands(text: str) -> list[str]:
    """Every `twostage ...` command in the fenced code blocks of `text`, continuations joined."""
    commands = []
    for block in split_fences(text)[1]:
        joined = "\n".join(block).replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.strip()
            if COMMAND.search(line):
                commands.append(line)
    return commands


def parse_error(command: str) -> str | None:
    """Why the real parser refuses `command` (None when it parses); the command never runs."""
    words = shlex.split(command, comments=True)
    start = next(i for i, w in enumerate(words) if w == "twostage" or w.endswith("/twostage"))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(words[start + 1 :])
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            return f"{command!r}: {err.getvalue().strip()}"
    return None


def long_options(parser: argparse.ArgumentParser, prefix: str = "twostage") -> dict[str, str]:
    """Every long option of `parser` and its sub-parsers (but --help), with the command's name."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(long_options(sub, f"{prefix} {name}"))
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                found[f"{prefix} {option}"] = option
    return found


def undocumented_options(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """The long options of `parser` that `text` never mentions."""
    return [
        where
        for where, option in long_options(parser).items()
        if not re.search(re.escape(option) + r"(?![\w-])", text)
    ]


def _all_docs() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in DOCS)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    assert broken_links(path, path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_shown_command_parses_with_the_cli(path: Path) -> None:
    commands = shown_commands(path.read_text(encoding="utf-8"))
    assert [e for e in map(parse_error, commands) if e] == []


def test_the_docs_show_commands_at_all() -> None:
    assert len(shown_commands(_all_docs())) >= 10


def test_every_long_option_of_the_cli_is_documented() -> None:
    assert len(long_options(build_parser())) >= 30
    assert undocumented_options(build_parser(), _all_docs()) == []


# The checks fail when the docs break: each on a small text made to break it.


@pytest.mark.parametrize(
    "text",
    [
        "See [the card](docs/no-such-page.md).",
        "See [the card](docs/models.md#no-such-heading).",
        "# Title\n\nSee [below](#no-such-section).",
        "![a picture](docs/no-such-picture.png)",
    ],
)
def test_a_broken_link_or_anchor_is_reported(text: str) -> None:
    assert len(broken_links(ROOT / "README.md", text)) == 1


def test_a_good_link_and_anchor_pass() -> None:
    text = "# The `run` command, ×4!\n\n[here](#the-run-command-4) [card](docs/models.md#blind-x4)"
    assert broken_links(ROOT / "README.md", text) == []


@pytest.mark.parametrize(
    "command",
    [
        "twostage restore photo.jpg --out restored/ --tiles auto",  # a renamed option
        "twostage restroe photo.jpg --out restored/",  # a misspelt command
        "twostage evaluate --pred a --gt b --lpips squeeze",  # a bad value
        ".venv/bin/twostage train",  # a missing argument
    ],
)
def test_a_command_the_cli_refuses_is_reported(command: str) -> None:
    assert shown_commands(f"```bash\n{command}   # comment\n```") == [f"{command}   # comment"]
    assert parse_error(command) is not None


def test_a_continued_command_is_parsed_whole() -> None:
    text = "```bash\ntwostage run sr-x4 \\\n    --profile cpu --bogus\n```"
    [command] = shown_commands(text)
    assert "--bogus" in command and parse_error(command) is not None


def test_an_option_the_docs_never_mention_is_reported() -> None:
    parser = build_parser()
    restore = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
        "restore"
    ]
    restore.add_argument("--tile-size")  # as if --tile were renamed
    assert undocumented_options(parser, _all_docs()) == ["twostage restore --tile-size"]
    assert "twostage restore --tile" in undocumented_options(parser, "--tile-size --tile-pad")
