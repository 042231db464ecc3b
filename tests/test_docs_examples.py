"""The scan-plugin example the README and docs/adding-a-scan-plugin.md quote is the shipped module, word for word."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "scan_plugin" / "block_raster_scan.py"


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a markdown text."""
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.MULTILINE | re.DOTALL)


def test_python_blocks_are_found_with_their_exact_text():
    assert python_blocks("x\n```python\na = 1\n\nb = 2\n```\n```bash\nls\n```\n") == ["a = 1\n\nb = 2\n"]


@pytest.mark.parametrize("doc", ["README.md", "docs/adding-a-scan-plugin.md"])
def test_the_quoted_example_module_is_the_shipped_file(doc):
    assert EXAMPLE.read_text() in python_blocks((ROOT / doc).read_text()), \
        f"{doc}: the block_raster_scan.py it quotes differs from {EXAMPLE.relative_to(ROOT)}"
