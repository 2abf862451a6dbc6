"""Every bad input of tests/cases_bad_inputs.py ends with one line and exit code 2 (command line) or with the
project's own exception (Python API), and docs/evidence.md shows the table those cases generate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bad_inputs import END, START, Case, Workspace, table
from cases_bad_inputs import CASES

DOCS = Path(__file__).resolve().parents[1] / "docs" / "evidence.md"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("bad-inputs-"))


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_a_bad_input_is_refused_with_one_line(case: Case, workspace):
    outcome = case.run(workspace)
    assert outcome.ok, f"{case.surface} {case.what}: {outcome.code}: {outcome.message}"
    if case.argv is not None:
        assert outcome.code == "exit 2"
    assert "Traceback" not in outcome.message


def test_the_table_in_the_docs_lists_every_case_refused():
    section = DOCS.read_text().split(START, 1)[1].split(END, 1)[0]
    rows = [line.split(" | ")[1:4] for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == len(CASES) >= 100
    assert [(where, what.replace("\\|", "|")) for where, what, _ in rows] == [(c.surface, c.what) for c in CASES]
    assert not [outcome for *_, outcome in rows if outcome.startswith("**")], "the docs show a case that was not refused"


def test_the_table_marks_what_was_not_refused():
    from bad_inputs import Outcome

    text = table([(CASES[0], Outcome(False, "accepted", "(no error)"))])
    assert "| 1 | CLI | " in text and "**accepted**" in text
