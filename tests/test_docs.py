"""The README and docs/: the commands CI runs, links that resolve, numbers that are generated."""

import re

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_the_readmes_test_command_is_what_ci_runs_and_it_stays_a_manual():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.+?)\n```", readme, re.S)
    assert blocks[1] in (ROOT / ".ci" / "run").read_text()
    assert blocks[0].endswith("dvc repro")
    assert len(readme.splitlines()) <= 200


def test_every_relative_link_and_anchor_resolves():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            assert file.exists(), f"{doc.relative_to(ROOT)}: link to {target}: no such file"
            if anchor:
                assert anchor in anchors(file.read_text()), (
                    f"{doc.relative_to(ROOT)}: link to {target}: no such heading"
                )


def test_the_readmes_table_is_the_generated_one():
    """Between its markers the README holds what `bar report --readme` writes: the table and the
    line naming the runs (commit, precision, threads, evaluate's MLflow run)."""
    from bar import report

    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(report.README_START) : readme.index(report.README_END)]
    assert re.search(r"Stage runs at commit `[0-9a-f]{7}", block) and "`evaluate` is MLflow run `" in block
    assert "| **BAR (routed)** |" in block
