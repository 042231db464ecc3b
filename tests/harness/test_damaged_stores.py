"""Damaged study stores. The Optuna journal (harness/journal.py): a cut-off last record is set aside before the
next append, a broken earlier record is one error naming the file and the line. The MLflow SQLite database
(harness.tracking.check_sqlite_store): damage is one error naming the file."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import optuna
import pytest

from harness.journal import check_journal
from harness.queue import open_storage
from harness.tracking import check_sqlite_store
from plugins.errors import HarnessError

RECORDS = b"".join(json.dumps({"op_code": i}).encode() + b"\n" for i in range(3))


def test_a_cut_off_last_record_is_moved_aside_and_the_journal_ends_at_the_last_whole_one(tmp_path):
    path = tmp_path / "optuna.journal"
    path.write_bytes(RECORDS + b'{"op_code": 3, "stud')
    check_journal(path)
    assert path.read_bytes() == RECORDS
    [aside] = tmp_path.glob("optuna.journal.cut-*")
    assert aside.read_bytes() == b'{"op_code": 3, "stud'


def test_a_last_line_that_is_not_json_is_moved_aside_too(tmp_path):
    path = tmp_path / "optuna.journal"
    path.write_bytes(RECORDS + b"xx{garbage\n")
    check_journal(path)
    assert path.read_bytes() == RECORDS and len(list(tmp_path.glob("optuna.journal.cut-*"))) == 1


def test_a_whole_journal_is_left_as_it_is(tmp_path):
    path = tmp_path / "optuna.journal"
    path.write_bytes(RECORDS)
    check_journal(path)
    assert path.read_bytes() == RECORDS and not list(tmp_path.glob("*.cut-*"))


def test_a_broken_record_before_the_last_is_one_error_naming_the_file_and_line(tmp_path):
    path = tmp_path / "optuna.journal"
    lines = RECORDS.splitlines(keepends=True)
    path.write_bytes(lines[0] + b"{broken\n" + lines[1] + lines[2])
    with pytest.raises(HarnessError, match=r"optuna.journal: line 2 of 4 is not a whole journal record"):
        check_journal(path)
    assert path.read_bytes() == lines[0] + b"{broken\n" + lines[1] + lines[2]


def test_a_study_whose_last_record_was_cut_off_takes_new_trials_and_reads_back(tmp_path):
    """Without the repair, the first append glues onto the cut line and every later read raises."""
    path = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(str(path), tmp_path))
    for _ in range(2):
        study.enqueue_trial({})
    path.write_bytes(path.read_bytes()[:-10])             # the second enqueue's record, cut off
    again = optuna.load_study(study_name="s", storage=open_storage(str(path), tmp_path))
    again.enqueue_trial({})
    reread = optuna.load_study(study_name="s", storage=open_storage(str(path), tmp_path))
    assert len(reread.get_trials(deepcopy=False)) == 2     # the first and the new one; the cut one never was


def _database(path):
    """A SQLite file of many pages (a table of 2,000 rows of 100 bytes)."""
    with closing(sqlite3.connect(path)) as con:
        con.execute("CREATE TABLE t (x TEXT)")
        con.executemany("INSERT INTO t VALUES (?)", [("x" * 100,)] * 2000)
        con.commit()


def test_a_healthy_tracking_database_passes(tmp_path):
    _database(tmp_path / "mlflow.db")
    check_sqlite_store(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_a_tracking_database_cut_short_is_one_error_naming_the_file(tmp_path):
    db = tmp_path / "mlflow.db"
    _database(db)
    db.write_bytes(db.read_bytes()[:8192])                 # two of its pages
    with pytest.raises(HarnessError, match=rf"^{db}: the MLflow database is damaged \(database disk image is "
                                           r"malformed\)"):
        check_sqlite_store(f"sqlite:///{db}")


def test_a_file_that_is_not_a_database_is_one_error_naming_the_file(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not sqlite " * 1000)
    with pytest.raises(HarnessError, match=rf"^{db}: the MLflow database is damaged \(file is not a database\)"):
        check_sqlite_store(f"sqlite:///{db}")


def test_run_on_a_study_whose_tracking_database_is_damaged_stops_with_that_one_line(tmp_path, registries, capsys):
    from harness.cli import main
    from tests.harness.runner_support import write_study
    path = write_study(tmp_path / "d.yaml", "d", axes={"backbone.width": [8]}, seeds=(0,))
    folder = tmp_path / "runs" / "d"
    folder.mkdir(parents=True)
    (folder / "mlflow.db").write_bytes(b"not sqlite " * 1000)
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(path), "--runs", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"{folder / 'mlflow.db'}: the MLflow database is damaged (file is not a database)" in err
