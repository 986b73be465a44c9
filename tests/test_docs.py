"""Every Python block in README.md and docs/*.md runs, or is an excerpt of a file that runs.

pytest-markdown-docs (``--markdown-docs`` in the pytest configuration) runs each
```` ```python ```` block as written. A block that cannot run on its own (a fragment of a
larger program) is marked ```` ```python notest excerpt:PATH ````: this test checks that
PATH is run by the test suite and that every line of code in the block is a line of PATH,
so the excerpt cannot drift from the code it shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: The examples that tests/test_examples.py runs as programs; examples/test_*.py run as tests.
RUN_AS_PROGRAMS = (REPO / "tests" / "test_examples.py").read_text()


def python_blocks(path: Path) -> list[tuple[int, list[str], str]]:
    """(line, info-string options, code) of each Python fence in a Markdown file."""
    blocks = []
    for token in MarkdownIt("commonmark").parse(path.read_text()):
        info = token.info.split()
        if token.type == "fence" and info and info[0] in ("py", "python", "python3") and token.map:
            blocks.append((token.map[0] + 1, info[1:], token.content))
    return blocks


def code_lines(text: str) -> list[str]:
    """The lines of code, stripped of indentation and comments; placeholders (``...``) left out."""
    lines = []
    for line in text.splitlines():
        code = line.split("  #")[0].split(" # ")[0].strip()
        if code and not code.startswith("#") and code != "...":
            lines.append(code)
    return lines


EXCERPTS = [
    pytest.param(path, line, options, code, id=f"{path.name}:{line}")
    for path in DOCS
    for line, options, code in python_blocks(path)
    if "notest" in options
]


def test_the_docs_have_python_blocks_that_run() -> None:
    runnable = [(path, line) for path in DOCS for line, options, _ in python_blocks(path) if "notest" not in options]
    assert len(runnable) >= 2, runnable


@pytest.mark.parametrize(("doc", "line", "options", "code"), EXCERPTS)
def test_every_block_that_does_not_run_is_an_excerpt_of_a_file_that_does(
    doc: Path, line: int, options: list[str], code: str
) -> None:
    sources = [option.removeprefix("excerpt:") for option in options if option.startswith("excerpt:")]
    assert len(sources) == 1, f"{doc.name}:{line}: mark a block 'python notest excerpt:PATH' or let it run"
    source = REPO / sources[0]
    assert source.is_file(), f"{doc.name}:{line}: {sources[0]} does not exist"
    is_test = source.name.startswith("test_")
    assert is_test or source.name in RUN_AS_PROGRAMS, f"{sources[0]} is not run by tests/test_examples.py"
    source_lines = set(code_lines(source.read_text()))
    missing = [code_line for code_line in code_lines(code) if code_line not in source_lines]
    assert not missing, f"{doc.name}:{line}: these lines are not in {sources[0]}: {missing}"
