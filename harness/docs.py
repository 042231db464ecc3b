"""`python -m harness.docs [--check]`: regenerate the registry-names block of docs/ARCHITECTURE.md from the registries.

The block sits between `<!-- registry:begin -->` and `<!-- registry:end -->`; it lists the names the built-in
plugins register (third-party plugins installed on this machine are left out), so the docs never retype them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plugins.errors import HarnessError
from plugins.registry import BUILTIN_PLUGINS, Registries, load_registries
from plugins.specs import KINDS

__all__ = ["ARCHITECTURE", "BEGIN", "END", "registry_markdown", "replace_block"]

BEGIN, END = "<!-- registry:begin -->", "<!-- registry:end -->"
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"
_BUILTIN = {m.split(".", 1)[1] for m in BUILTIN_PLUGINS}   # plugin names as the registry records them


def registry_markdown(registries: Registries | None = None) -> str:
    """A markdown table: one row per component kind, its built-in names in registration order."""
    registries = registries or load_registries()
    rows = ["| kind | built-in names | plugin |", "|---|---|---|"]
    for kind in KINDS:
        items = [item for item in registries[kind] if item.plugin in _BUILTIN]
        names = " ".join(f"`{item.entry.name}`" for item in items)
        plugins = ", ".join(sorted({f"`plugins/{item.plugin}.py`" for item in items}))
        rows.append(f"| {kind} | {names} | {plugins} |")
    return "\n".join(rows)


def replace_block(text: str, block: str, *, source: str = "docs/ARCHITECTURE.md") -> str:
    """`text` with everything between the BEGIN and END marker lines replaced by `block`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise HarnessError(f"{source}: no '{BEGIN}' ... '{END}' block to regenerate")
    return text[: start + len(BEGIN)] + "\n" + block + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the block in place (exit 0), or with --check exit 1 when the committed block is stale."""
    parser = argparse.ArgumentParser(prog="python -m harness.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the committed block is current")
    args = parser.parse_args(argv)
    text = ARCHITECTURE.read_text()
    try:
        new = replace_block(text, registry_markdown())
    except HarnessError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(f"{ARCHITECTURE.name}: registry block is stale; run `python -m harness.docs`", file=sys.stderr)
            return 1
        return 0
    ARCHITECTURE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
