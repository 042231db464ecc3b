"""`python -m harness.docs`: the registry names in docs/ARCHITECTURE.md are generated, never retyped."""

import pytest

from harness.docs import ARCHITECTURE, BEGIN, END, main, registry_markdown, replace_block
from plugins.errors import HarnessError
from plugins.registry import load_registries


def test_committed_registry_block_equals_what_the_registries_generate():
    text = ARCHITECTURE.read_text()
    assert replace_block(text, registry_markdown()) == text, "stale: run `python -m harness.docs`"


def test_generated_block_lists_exactly_the_names_registered_with_third_party_plugins_switched_off(monkeypatch):
    rows = {line.split("|")[1].strip(): line.split("|")[2].split() for line in registry_markdown().splitlines()[2:]}
    monkeypatch.setenv("ZIGMA_HARNESS_DISABLE_AUTOLOAD", "1")
    builtin_only = load_registries()
    assert {kind: sorted(n.strip("`") for n in names) for kind, names in rows.items()} == \
        {kind: sorted(builtin_only[kind].names()) for kind in rows}


def test_replace_block_rewrites_only_between_the_markers():
    text = f"before\n{BEGIN}\nold names\n{END}\nafter\n"
    assert replace_block(text, "new names") == f"before\n{BEGIN}\nnew names\n{END}\nafter\n"


def test_a_document_without_markers_is_refused_with_the_file_named():
    with pytest.raises(HarnessError, match="docs/ARCHITECTURE.md: no '<!-- registry:begin -->'"):
        replace_block("no block here\n", "x")


def test_check_exits_1_when_the_committed_block_is_stale(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "ARCHITECTURE.md"
    stale.write_text(f"# doc\n{BEGIN}\n| scans | `zigzg-8` |\n{END}\n")
    monkeypatch.setattr("harness.docs.ARCHITECTURE", stale)
    assert main(["--check"]) == 1 and "stale" in capsys.readouterr().err
    assert main([]) == 0 and main(["--check"]) == 0
    assert "`zigzag-8`" in stale.read_text() and "zigzg-8" not in stale.read_text()


def test_readmes_cli_table_gives_every_option_of_every_command():
    """Each command has a row in README's CLI table naming each of its (non-hidden) options; `--runs` and the like,
    shared by several commands, may be said once in the prose under the table."""
    import re
    from pathlib import Path

    import typer

    from harness.cli import app

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## The CLI"):readme.index("## Browsing runs")]
    rows = [line for line in section.splitlines() if line.startswith("| `harness")]
    prose = "\n".join(line for line in section.splitlines() if not line.startswith("|"))

    def commands(c, path):
        if hasattr(c, "commands"):                      # a group (typer ships its own click: duck-typed)
            for name, sub in c.commands.items():
                yield from commands(sub, [*path, name])
        else:
            yield " ".join(path), c

    missing = []
    for path, command in commands(typer.main.get_command(app), []):
        mine = "\n".join(r for r in rows if f"harness {path}" in r)
        if not mine:
            missing.append(f"{path}: no row")
            continue
        for p in command.params:
            option = getattr(p, "param_type_name", "") == "option" and not p.hidden
            longs = [o for o in (*p.opts, *p.secondary_opts) if o.startswith("--")] if option else []   # --x/--no-x
            if longs and longs[0] != "--help" and not any(
                    re.search(re.escape(o) + r"(?![\w-])", mine + prose) for o in longs):
                missing.append(f"{path}: {longs[0]}")
    assert not missing, missing
