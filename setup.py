"""Build hook: a built (non-editable) install records the git commit it was built from in harness/_build_info.py.

Everything else about the package is in pyproject.toml. The commit comes from ZIGMA_HARNESS_GIT_SHA when set (a
copy without .git), else from `git rev-parse HEAD` of the source tree; no commit, no file.
"""

import os
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


def build_info(src: Path) -> str | None:
    """The text of harness/_build_info.py for the source tree at `src`, or None where no commit is known."""
    sha, dirty = os.environ.get("ZIGMA_HARNESS_GIT_SHA"), None
    if not sha:
        def git(*args: str) -> str | None:
            try:
                out = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=10,
                                     check=False)
            except (OSError, subprocess.TimeoutExpired):
                return None
            return out.stdout.strip() if out.returncode == 0 else None
        sha = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no") if sha else None
        dirty = bool(status) if status is not None else None
    if not sha:
        return None
    return f'"""Written at build time by setup.py."""\nGIT_SHA = {sha!r}\nGIT_DIRTY = {dirty!r}\n'


class BuildPyWithCommit(build_py):
    """build_py, then harness/_build_info.py in the build tree."""

    def run(self) -> None:
        super().run()
        text = build_info(Path(__file__).resolve().parent)
        if text is not None and not self.editable_mode:
            target = Path(self.build_lib) / "harness" / "_build_info.py"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)


if __name__ == "__main__":          # setuptools' build backend runs this file as __main__
    setup(cmdclass={"build_py": BuildPyWithCommit})
