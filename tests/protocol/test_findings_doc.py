"""docs/format.md's findings table is the code's: same kinds, severities, meanings."""

from __future__ import annotations

import re
from pathlib import Path

from protocol.findings import FINDING_KINDS, SEVERITIES

ROOT = Path(__file__).resolve().parents[2]
FORMAT = ROOT / "docs" / "format.md"


def documented() -> dict[str, tuple[str, str]]:
    text = FORMAT.read_text()
    start = text.index("<!-- findings table")
    end = text.index("<!-- end of findings table -->")
    rows = {}
    for line in text[start:end].splitlines():
        m = re.fullmatch(r"\| `(\w+)` \| (\w+) \| (.*) \|", line)
        if m:
            assert m[1] not in rows, f"{m[1]} twice on the page"
            rows[m[1]] = (m[2], m[3])
    return rows


def test_the_page_lists_every_kind_with_the_code_s_severity_and_meaning():
    code = {k: (v.severity, v.meaning) for k, v in FINDING_KINDS.items()}
    assert documented() == code


def test_every_kind_the_code_reports_is_in_the_table():
    used = set()
    for path in (ROOT / "protocol").glob("*.py"):
        source = path.read_text()
        used |= set(re.findall(r'(?:find|Finding)\(\s*[^,()]+,\s*"(\w+)"', source))
        used |= set(re.findall(r'_Refused\(\s*"(\w+)"', source))
    assert used, "the pattern found nothing: fix the test"
    assert used - set(FINDING_KINDS) == set()
    assert {v.severity for v in FINDING_KINDS.values()} <= set(SEVERITIES)
