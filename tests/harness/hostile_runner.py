"""Run `harness validate` (or `run --dry-run`) on each file given, in this one process, under a memory cap.

    python -m tests.harness.hostile_runner MEMORY_BYTES SECONDS COMMAND FILE...

Prints one JSON line per file: {"file", "code", "output", "seconds"}. A file that takes longer than SECONDS
ends the process (SIGALRM, default action), so the caller sees which file hung.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import signal
import sys
import time


def main(argv: list[str]) -> None:
    memory, seconds, command, files = int(argv[0]), int(argv[1]), argv[2], argv[3:]
    # RLIMIT_DATA (heap and private mappings), not RLIMIT_AS: torch's shared libraries alone map more than 1.5 GB
    # of address space, but a YAML bomb or an eager dataset grows the data segment
    resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    from harness.cli import main as harness
    for path in files:
        out = io.StringIO()
        print(json.dumps({"started": path}), flush=True)
        t0 = time.perf_counter()
        signal.alarm(seconds)
        args = ["validate", path] if command == "validate" else ["run", path, "--dry-run", "--runs", "/nonexistent"]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                harness(args)
                code = 0
            except SystemExit as exc:
                code = exc.code
            except BaseException:  # noqa: BLE001 - anything else escaping main is the finding
                import traceback
                out.write("Traceback (escaped from main)\n" + traceback.format_exc())
                code = -1
        signal.alarm(0)
        print(json.dumps({"file": path, "code": code, "output": out.getvalue(),
                          "seconds": round(time.perf_counter() - t0, 2)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
