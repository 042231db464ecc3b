"""Every broken study file gives one line naming the file and the key, no traceback, non-zero exit."""

from pathlib import Path

import pytest

from harness.cli import main

BROKEN = sorted((Path(__file__).parent / "broken_studies").glob("*.yaml"))


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: ...'"
    return first.removeprefix("# expect: ")


def _run(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out = capsys.readouterr()
    return exc.value.code, (out.out + out.err).strip()


def test_the_corpus_has_at_least_fifteen_broken_studies():
    assert len(BROKEN) >= 15


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_study_gives_one_line_naming_file_and_key(capsys, path):
    code, output = _run(capsys, "validate", str(path))
    assert code == 2
    assert "Traceback" not in output
    lines = output.splitlines()
    assert len(lines) == 1, output
    assert str(path) in lines[0]
    assert _expected(path) in lines[0]


def test_unknown_preset_suggests_the_near_match(capsys, tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text("name: x\npresets:\n  smoke: {seeds: [0]}\n")
    code, output = _run(capsys, "run", str(study), "--preset", "smoek", "--dry-run")
    assert code == 2
    assert f"{study}: presets: unknown preset 'smoek'. Did you mean 'smoke'?" in output
    assert "Traceback" not in output


def test_preset_overrides_are_validated_with_their_key(capsys, tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text("name: x\npresets:\n  smoke: {base: {train: {steps: -5}}}\n")
    code, output = _run(capsys, "validate", str(study), "--preset", "smoke")
    assert code == 2
    assert "base.train.steps: Input should be greater than or equal to 1" in output


def test_missing_study_file_is_one_clear_line(capsys, tmp_path):
    code, output = _run(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert output.splitlines() == [f"✗ {tmp_path / 'nope.yaml'}: no such study file"]


def test_a_mistyped_study_file_name_suggests_the_study_file_beside_it(capsys, tmp_path):
    (tmp_path / "scan_ablation.yaml").write_text("name: x\n")
    code, output = _run(capsys, "validate", str(tmp_path / "scan_ablaton.yaml"))
    assert code == 2
    expected = (f"✗ {tmp_path / 'scan_ablaton.yaml'}: no such study file. "
                f"Did you mean {tmp_path / 'scan_ablation.yaml'}?")
    assert output.splitlines() == [expected]


def test_a_folder_given_as_the_study_file_lists_the_study_files_in_it(capsys, tmp_path):
    (tmp_path / "b.yaml").write_text("name: b\n")
    (tmp_path / "a.yaml").write_text("name: a\n")
    code, output = _run(capsys, "run", str(tmp_path), "--dry-run")
    assert code == 2
    expected = f"error: {tmp_path}: is a folder, not a study file; study files in it: a.yaml, b.yaml"
    assert output.splitlines() == [expected]


def test_a_single_value_where_a_list_belongs_asks_for_a_list_in_yaml_words(capsys, tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text("name: x\nseeds: 0\n")
    code, output = _run(capsys, "validate", str(study))
    assert code == 2 and output.splitlines() == [f"✗ {study}: seeds: Input should be a list, e.g. [a, b] (got 0)"]


def test_a_value_where_a_mapping_belongs_asks_for_a_mapping_in_yaml_words(capsys, tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text("name: x\nbase: {train: 5}\n")
    code, output = _run(capsys, "validate", str(study))
    assert code == 2
    assert output.splitlines() == [f"✗ {study}: base.train: Input should be a mapping, e.g. {{key: value}} (got 5)"]
