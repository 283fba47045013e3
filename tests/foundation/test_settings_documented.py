"""Every setting the studio reads is documented in the README's configuration table."""

from __future__ import annotations

import re

from app.settings import Settings
from app.templating import ROOT


def test_every_setting_has_a_readme_row() -> None:
    readme = (ROOT / "README.md").read_text()
    table_rows = [line for line in readme.splitlines() if line.startswith("| `")]
    documented = set()
    for row in table_rows:
        first_cell = row.split("|")[1]
        documented.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    missing = sorted(set(Settings.model_fields) - documented)
    assert missing == [], f"settings missing from the README's configuration table: {missing}"


def test_settings_have_descriptions() -> None:
    undocumented = [name for name, f in Settings.model_fields.items() if not f.description]
    assert undocumented == []
