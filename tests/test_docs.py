"""The documentation agrees with the registry, and its Python examples run.

- every registered module is named in some page of ``docs/``;
- every registered module has exactly one "facts" row (kind, category, placement, maps,
  identity at init, size-bound, memory) and it matches ``module_info(name)``;
- every registered paper-vs-code option (``module_info(name).divergences``) has a row in the
  options table of the module's own section, with the registered default, paper and code
  values; no options row documents an option that is not registered;
- every ```python block of ``docs/*.md`` runs in a fresh namespace. A block that truly needs
  files or a trained model carries ``# doc: skip-run: <reason>`` and is only compiled.
- relative links resolve (except to the run artefacts listed in ``ARTEFACTS``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import attnzoo
from attnzoo.registry import ModuleInfo, module_info

DOCS = Path(__file__).resolve().parents[1] / "docs"
FACTS_HEADER = (
    "name",
    "kind",
    "category",
    "paper placement",
    "maps",
    "identity at init",
    "size-bound",
    "memory",
)
OPTIONS_HEADER = ("module", "option", "default", "paper", "official code", "what differs")
SKIP_MARKER = "# doc: skip-run:"


# Link targets that are build artefacts, produced by a run rather than written by hand; the docs
# point at where they appear. Every other relative link must resolve.
def _pages() -> list[Path]:
    pages = [*sorted(DOCS.glob("*.md")), DOCS.parent / "README.md"]
    if not pages:
        raise FileNotFoundError(f"no Markdown pages under {DOCS}")
    return pages


def _sections(page: Path) -> list[tuple[str, str]]:
    """(heading, text) of every level-2 section of a page (the preamble is heading '')."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith("## "):
            sections.append((line[3:].strip(), []))
        else:
            sections[-1][1].append(line)
    return [(heading, "\n".join(lines)) for heading, lines in sections]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _tables(text: str, header: tuple[str, ...]) -> list[list[str]]:
    """Body rows of every Markdown table in ``text`` whose header row is ``header``."""
    rows: list[list[str]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and tuple(_cells(line)) == header:
            for body in lines[i + 2 :]:
                if not body.startswith("|"):
                    break
                cells = _cells(body)
                if len(cells) != len(header):
                    raise ValueError(f"table row with {len(cells)} cells, expected {len(header)}")
                rows.append(cells)
    return rows


def _code(value: object) -> str:
    return f"`{value!r}`"


def _expected_facts(info: ModuleInfo) -> list[str]:
    return [
        f"`{info.name}`",
        info.kind,
        info.category,
        info.placement,
        ", ".join(f"`{m}`" for m in info.maps) or "—",
        "yes" if info.identity_at_init else "no",
        "yes" if info.size_bound else "no",
        info.memory,
    ]


def _facts_rows() -> list[tuple[Path, str, list[str]]]:
    """(page, section text, row) of every facts row in the docs."""
    return [
        (page, text, row)
        for page in _pages()
        for _, text in _sections(page)
        for row in _tables(text, FACTS_HEADER)
    ]


def _section_of(name: str) -> tuple[Path, str]:
    found = [(page, text) for page, text, row in _facts_rows() if row[0] == f"`{name}`"]
    if len(found) != 1:
        where = ", ".join(p.name for p, _ in found) or "no page"
        raise AssertionError(f"{name!r} needs exactly one facts row in docs/; found in {where}")
    return found[0]


def _python_blocks() -> list[tuple[str, int, str]]:
    blocks = []
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            line = text[: match.start()].count("\n") + 2  # first line of code
            blocks.append((page.name, line, match.group(1)))
    return blocks


BLOCKS = _python_blocks()
MODULES = attnzoo.list_modules()


def test_every_registered_module_is_named_in_the_docs() -> None:
    corpus = "\n".join(page.read_text(encoding="utf-8") for page in _pages())
    missing = [name for name in MODULES if f"`{name}`" not in corpus]
    assert not missing, f"registered modules named in no docs page: {missing}"


@pytest.mark.parametrize("name", MODULES)
def test_facts_row_matches_the_registry(name: str) -> None:
    page, text = _section_of(name)
    (row,) = [r for r in _tables(text, FACTS_HEADER) if r[0] == f"`{name}`"]
    expected = _expected_facts(module_info(name))
    for column, got, want in zip(FACTS_HEADER, row, expected, strict=True):
        assert got == want, f"{page.name}, {name}: {column} is {got!r}, registry says {want!r}"


def test_facts_rows_name_registered_modules() -> None:
    documented = [(page.name, row[0]) for page, _, row in _facts_rows()]
    assert documented, "no facts tables found in docs/"
    stale = [(p, n) for p, n in documented if n.strip("`") not in MODULES]
    assert not stale, f"facts rows for modules that are not registered: {stale}"


@pytest.mark.parametrize("name", MODULES)
def test_every_divergence_is_documented_on_the_module_page(name: str) -> None:
    page, text = _section_of(name)
    rows = {(r[0], r[1]): r for r in _tables(text, OPTIONS_HEADER)}
    for d in module_info(name).divergences:
        row = rows.get((f"`{name}`", f"`{d.option}`"))
        assert row is not None, f"{page.name}: no options row for {name}.{d.option}"
        got = (row[2], row[3], row[4])
        want = (_code(d.default), _code(d.paper), _code(d.code))
        assert got == want, (
            f"{page.name}, {name}.{d.option}: (default, paper, code) {got} != {want}"
        )


def test_options_rows_are_registered_divergences() -> None:
    rows = [
        (page.name, row)
        for page in _pages()
        for _, text in _sections(page)
        for row in _tables(text, OPTIONS_HEADER)
    ]
    assert rows, "no options tables found in docs/"
    for page_name, row in rows:
        name, option = row[0].strip("`"), row[1].strip("`")
        assert name in MODULES, f"{page_name}: options row for unregistered module {name!r}"
        options = [d.option for d in module_info(name).divergences]
        assert option in options, f"{page_name}: {name}.{option} is not a registered option"


@pytest.mark.parametrize(
    ("page", "line", "code"), BLOCKS, ids=[f"{page}:{line}" for page, line, _ in BLOCKS]
)
def test_python_block_runs(page: str, line: int, code: str) -> None:
    compiled = compile(code, f"docs/{page}:{line}", "exec")
    if SKIP_MARKER in code:
        reason = code.split(SKIP_MARKER, 1)[1].splitlines()[0].strip()
        assert reason, f"docs/{page}:{line}: '{SKIP_MARKER}' needs a reason after the colon"
        return
    torch.manual_seed(0)
    exec(compiled, {"__name__": "__docs__"})


def test_relative_links_resolve() -> None:
    broken = set()
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if path.exists():
                continue
            broken.add(f"{page.name} -> {target}")
    assert not broken, f"broken relative links: {sorted(broken)}"


INDEX_HEADER = ("module", "paper", "kind", "category", "page")
CODE_DEFAULTS_HEADER = (
    "module",
    "option",
    "default",
    "paper's value",
    "why the default is not the paper's",
)


def test_index_lists_every_module_with_its_page() -> None:
    rows = {row[0]: row for row in _tables((DOCS / "index.md").read_text("utf-8"), INDEX_HEADER)}
    assert sorted(name.strip("`") for name in rows) == MODULES
    for name in MODULES:
        page, _ = _section_of(name)
        info = module_info(name)
        _, paper, kind, category, link = rows[f"`{name}`"]
        assert link.endswith(f"({page.name})"), f"index.md: {name} links {link}, not {page.name}"
        assert (kind, category) == (info.kind, info.category), f"index.md: {name} kind/category"
        assert paper == f"{info.paper} ({info.venue} {info.year})", f"index.md: {name} paper"


def test_index_lists_exactly_the_defaults_that_are_not_the_papers() -> None:
    rows = _tables((DOCS / "index.md").read_text("utf-8"), CODE_DEFAULTS_HEADER)
    documented = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    expected = {
        (f"`{name}`", f"`{d.option}`"): (_code(d.default), _code(d.paper))
        for name in MODULES
        for d in module_info(name).divergences
        if d.default != d.paper
    }
    assert documented == expected
    assert all(r[4] for r in rows), "index.md: every non-paper default needs a reason"
