"""The CLI reference in docs/ is the commands' own help; regenerate it with `make docs`."""

from pathlib import Path

from cmvtrial.adapters.cli import reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli-reference.md"


def test_cli_reference_is_up_to_date():
    assert DOC.read_text(encoding="utf-8") == reference.render(), "run `make docs`"


def test_every_command_has_help_text():
    missing = [" ".join(path) for path, command in reference.commands() if not command.help]
    assert missing == []
