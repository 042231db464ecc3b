"""House rules read from the source (AST, no imports): private plugin modules stay inside `plugins`, only the CLI
imports `harness/commands/`, and long files say why they are long (issue 19)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zigma", "plugins", "harness", "benchmarks")
MAX_LINES = 400
REASON = "long because:"


def _sources(*packages: str, root: Path = ROOT) -> list[Path]:
    return sorted(p for pkg in packages for p in (root / pkg).rglob("*.py"))


def _imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute dotted names a file imports (relative imports resolved; `from a import b` yields a and a.b)."""
    package = list(path.relative_to(root).parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}
    return names


def _offenders(packages: tuple[str, ...], allowed, forbidden, root: Path = ROOT) -> list[str]:
    """'file: module' for every import in `packages` that `forbidden` flags, in files `allowed` does not exempt."""
    out = []
    for path in _sources(*packages, root=root):
        rel = path.relative_to(root).as_posix()
        if allowed(rel):
            continue
        bad = {m for m in _imported_modules(path, root) if forbidden(m)}
        bad = sorted(m for m in bad if not any(m.startswith(b + ".") for b in bad))   # `from a import b`: a
        out += [f"{rel}: {m}" for m in bad]
    return out


def _private_plugin_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "plugins" and any(p.startswith("_") and not p.startswith("__") for p in parts[1:])


def _commands_module(name: str) -> bool:
    return name == "harness.commands" or name.startswith("harness.commands.")


def test_the_import_checks_catch_absolute_and_relative_imports_in_a_throwaway_tree(tmp_path):
    pkg = tmp_path / "harness" / "report"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("from plugins._metrics.cost import x\nimport plugins.registry\nfrom plugins import _data\n")
    (pkg / "b.py").write_text("from ..commands.scans import scan_figure\n")
    assert _offenders(("harness",), lambda rel: False, _private_plugin_module, tmp_path) == \
        ["harness/report/a.py: plugins._data", "harness/report/a.py: plugins._metrics.cost"]
    assert _offenders(("harness",), lambda rel: False, _commands_module, tmp_path) == \
        ["harness/report/b.py: harness.commands.scans"]


def test_no_module_outside_plugins_imports_a_private_plugins_module():
    offenders = _offenders(("zigma", "harness", "benchmarks"), lambda rel: False, _private_plugin_module)
    assert not offenders, "\n".join(offenders)


def test_only_harness_cli_imports_harness_commands():
    offenders = _offenders(PACKAGES, lambda rel: rel == "harness/cli.py", _commands_module)
    assert not offenders, "\n".join(offenders)


def _too_long_without_reason() -> list[str]:
    out = []
    for path in _sources(*PACKAGES):
        lines = path.read_text().splitlines()
        if len(lines) > MAX_LINES and not any(REASON in line for line in lines[:3]):
            out.append(f"{path.relative_to(ROOT).as_posix()}: {len(lines)} lines")
    return out


def test_no_source_file_is_over_400_lines_without_a_long_because_line_at_its_top():
    offenders = _too_long_without_reason()
    assert not offenders, "\n".join(offenders)
