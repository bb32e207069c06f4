"""docs/deploy.md shows the options policy exactly as the code holds it, so the doc cannot drift from the table."""

from pathlib import Path

from detres.deploy.option_policy import POLICY, policy_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"


def test_deploy_doc_holds_the_current_policy_table():
    text = DOC.read_text()
    start = text.index("<!-- options-policy")
    table = text[text.index("\n", start) + 1: text.index("<!-- /options-policy -->")].strip()
    assert table == policy_markdown()
    assert len(table.splitlines()) == len(POLICY) + 2  # header, rule, one row per option
