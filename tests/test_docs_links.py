"""Every relative link in the user-facing markdown (README.md, docs/, benchmarks/README.md, examples/) points at a
file of the repository, and every `#anchor` into a markdown file at one of its headings (GitHub's slug rule)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted({ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md"),
               *(ROOT / "examples").glob("**/*.md")})
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _prose(path: Path) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, inside = [], False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if _FENCE.match(line):
            inside = not inside
        elif not inside:
            lines.append((n, line))
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {github_slug(line.lstrip("#")) for _, line in _prose(path) if re.match(r"#{1,6} ", line)}


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every link that is not a URL (scheme:...) in the prose of `path`."""
    return [(n, m.group(1)) for n, line in _prose(path) for m in _LINK.finditer(line)
            if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", m.group(1))]


def test_the_slug_rule_matches_githubs_anchors_for_headings_like_ours():
    assert github_slug("One trial on several processes (torchrun)") == "one-trial-on-several-processes-torchrun"
    assert github_slug("Speed switches (small models)") == "speed-switches-small-models"
    assert github_slug("FID weights (`inception-2015-12-05.pt`)") == "fid-weights-inception-2015-12-05pt"


def test_links_inside_code_blocks_are_not_links(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("[a](a.md)\n```\n[b](b.md)\n```\n[c](https://example.org) [d](#here)\n")
    assert relative_links(doc) == [(1, "a.md"), (5, "#here")]


@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_relative_link_resolves(doc):
    broken = []
    for n, target in relative_links(doc):
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists() or ROOT not in (dest, *dest.parents):
            broken.append(f"{doc.relative_to(ROOT)}:{n}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{doc.relative_to(ROOT)}:{n}: {target} (no heading '#{anchor}' in {dest.name})")
    assert not broken, "\n".join(broken)
