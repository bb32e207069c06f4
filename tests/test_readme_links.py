"""README.md points only to files that are in the repository (it once named a DESIGN.md that was not)."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _named_files(text: str) -> set[str]:
    """Markdown link targets, and back-quoted names of .md files, relative to the repository root."""
    links = {m.group(1).split("#")[0] for m in re.finditer(r"\]\(([^)\s]+)\)", text)}
    quoted = set(re.findall(r"`([\w./-]+\.md)`", text))
    return {name for name in links | quoted if name and "://" not in name}


def test_every_file_the_readme_names_exists():
    named = _named_files((REPO / "README.md").read_text())
    assert "docs/architecture.md" in named and "DESIGN.md" not in named
    missing = sorted(name for name in named if not (REPO / name).exists())
    assert missing == []
