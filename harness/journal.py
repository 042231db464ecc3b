"""The Optuna journal file before it is opened: a cut-off last record is set aside, a broken earlier one is named.

Optuna's JournalFileBackend writes one JSON record per line and, reading, skips a last line that is cut off or is
not JSON (a writer killed mid-write, a full disk). The next append would glue its record onto that line, and from
then on every read of the study fails with a JSONDecodeError. So before a journal is opened, a broken last line
is moved out of it (into `optuna.journal.cut-<time>`: nothing is deleted) under Optuna's own journal lock, and a
broken line before the last, which Optuna cannot read past, is one error naming the file and the line.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from plugins.errors import HarnessError

__all__ = ["check_journal"]

_log = logging.getLogger("harness.journal")


def _first_broken(data: bytes) -> tuple[int, int] | None:
    """(line number from 1, byte offset) of the first line that is not a whole JSON record; None when all are."""
    offset = 0
    for number, line in enumerate(data.splitlines(keepends=True), start=1):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("cut off")
            json.loads(line)
        except ValueError:
            return number, offset
        offset += len(line)
    return None


def check_journal(path: Path) -> None:
    """Set aside a cut-off or broken last record of the journal at `path` (with a warning); an earlier broken
    record raises HarnessError. A journal that cannot be written is left as it is (Optuna reads past its tail)."""
    if not path.is_file() or _first_broken(path.read_bytes()) is None:
        return
    from optuna.storages.journal import JournalFileSymlinkLock
    from optuna.storages.journal._file import get_lock_file

    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        data = path.read_bytes()
        number, _ = _first_broken(data)
        if number < len(data.splitlines()):
            raise HarnessError(f"{path}: line {number} is not a whole journal record (corrupt); the study cannot "
                               "be read past it")
        return
    with get_lock_file(JournalFileSymlinkLock(str(path))):      # no writer is mid-record now
        data = path.read_bytes()
        broken = _first_broken(data)
        if broken is None:
            return
        number, offset = broken
        if number < len(data.splitlines()):
            raise HarnessError(f"{path}: line {number} of {len(data.splitlines())} is not a whole journal record "
                               "(corrupt); the study cannot be read past it: restore the journal from a copy, "
                               "or cut it before that line to keep the records before it")
        aside = path.with_name(f"{path.name}.cut-{time.strftime('%Y%m%d-%H%M%S')}")
        aside.write_bytes(data[offset:])
        with open(path, "r+b") as f:
            f.truncate(offset)
            f.flush()
            os.fsync(f.fileno())
    _log.warning("%s: its last record (line %d, %d bytes) was cut off or not JSON, so no trial state it held "
                 "was ever read; moved to %s", path, number, len(data) - offset, aside.name)
