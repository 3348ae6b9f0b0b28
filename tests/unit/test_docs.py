"""Documentation is checked against the code: every error code and every setting is documented."""

from pathlib import Path

import pytest

from cmvtrial.config import Settings
from cmvtrial.errors import all_error_classes

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("error", all_error_classes(), ids=lambda cls: cls.code)
def test_every_error_code_is_documented(error):
    assert f"`{error.code}`" in (DOCS / "errors.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name):
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert f"`{name}`" in text and f"`CMVTRIAL_{name.upper()}`" in text


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_has_help_text(name):
    assert Settings.model_fields[name].description
