"""The CLI reference's text: every command's `--help`, from the Click commands themselves.

cog runs this inside docs/cli-reference.md; tests/test_docs.py checks the page is current.
"""

from __future__ import annotations

from click.testing import CliRunner

from kb.cli import cli

WIDTH = 100  # fixed, so the page does not depend on the terminal that regenerated it


def help_text(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="kb", terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    return result.output


def help_sections() -> str:
    parts = ["\n## kb\n\n```text\n" + help_text() + "```\n"]
    for name in sorted(cli.commands):
        parts.append(f"\n## kb {name}\n\n```text\n" + help_text(name) + "```\n")
    return "".join(parts)
