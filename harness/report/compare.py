"""Is a committed report what its store gives? The report's text files compared without their one 'Generated' line.

Compared: README.md (tables, header, notes, provenance; the `Generated ...` line left out), results.csv (whole) and
summary.json (every number of the tables; its `generated` field left out). Not compared: the PNGs and index.html
(which embeds them), whose bytes depend on the matplotlib and font versions of the machine that drew them.
"""

from __future__ import annotations

import difflib
import json
import tempfile
from pathlib import Path

from .render import GENERATED_PREFIX

__all__ = ["TABLE_FILES", "report_differences", "table_texts"]

TABLE_FILES = ("README.md", "results.csv", "summary.json")


def table_texts(report_dir: str | Path) -> dict[str, str | None]:
    """file name -> its compared text (None when the file is missing)."""
    out: dict[str, str | None] = {}
    for name in TABLE_FILES:
        path = Path(report_dir) / name
        if not path.is_file():
            out[name] = None
            continue
        text = path.read_text(encoding="utf-8")
        if name == "README.md":
            text = "".join(line for line in text.splitlines(keepends=True) if GENERATED_PREFIX not in line)
        elif name == "summary.json":
            doc = json.loads(text)
            doc.pop("generated", None)
            text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        out[name] = text
    return out


def _first_difference(name: str, a: str | None, b: str | None) -> str:
    if a is None or b is None:
        return f"{name}: missing in the {'committed' if a is None else 'regenerated'} report"
    diff = list(difflib.unified_diff(a.splitlines(), b.splitlines(), "committed", "regenerated", n=0, lineterm=""))
    changed = [d for d in diff[2:] if d[:1] in "+-"][:4]
    return f"{name}: " + " | ".join(line[:160] for line in changed)


def report_differences(study: str | Path, report_dir: str | Path | None = None, *,
                       runs_dir: str | Path = "runs") -> tuple[Path, list[str]]:
    """Regenerate the report of `study` (a folder or exported store) into a temporary folder and compare its
    tables with `report_dir`'s (default reports/<study name>); returns that folder and one line per differing
    file (none: identical)."""
    from .render import build_report

    with tempfile.TemporaryDirectory(prefix="harness-check-") as tmp:
        path = build_report(study, Path(tmp) / "report", runs_dir=runs_dir)
        fresh = table_texts(path)
        name = json.loads((path / "summary.json").read_text(encoding="utf-8"))["name"]
    target = Path(report_dir) if report_dir is not None else Path("reports") / name
    committed = table_texts(target)
    return target, [_first_difference(n, committed[n], fresh[n]) for n in TABLE_FILES if committed[n] != fresh[n]]
