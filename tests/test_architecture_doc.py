"""docs/architecture.md, the map of the code, names every file under detres/ and tools/ once, and only files that
exist: a change that adds, moves or removes a file must update the map."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_map_names_every_file_and_only_existing_ones():
    text = (REPO / "docs" / "architecture.md").read_text()
    listed = re.findall(r"^- `((?:detres|tools)/[\w/]+\.py)`: \S", text, flags=re.MULTILINE)
    actual = sorted(str(p.relative_to(REPO)) for root in ("detres", "tools") for p in (REPO / root).rglob("*.py"))
    assert sorted(set(listed)) == sorted(listed), "a file is listed twice"
    assert sorted(listed) == actual


def test_the_layer_table_follows_the_enforced_order():
    from test_layering import LAYERS

    text = (REPO / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| (`[^|]+`) \|", text.split("## Layers")[1].split("##")[0], flags=re.MULTILINE)
    assert [re.findall(r"`(\w+)`", row) for row in rows] == LAYERS
