"""A damaged Optuna journal (harness/journal.py): a cut-off last record is set aside before the next append, a
broken earlier record is one error naming the file and the line."""

from __future__ import annotations

import json

import optuna
import pytest

from harness.journal import check_journal
from harness.queue import open_storage
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
