"""Where a result came from: the git commit, package versions, the machine and the command.

Every file of results (``starbucks evaluate --output``, the benchmarks in ``experiments/``)
records this, so a figure can be traced to the code and libraries that measured it. Paths in
the recorded command are relative to the working folder, so results do not hold one
person's home folder and compare across clones.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("starbucks-retrieval", "torch", "transformers", "faiss-cpu", "faiss-gpu-cu12", "numpy",
            "ir-measures", "ir-datasets", "bm25s", "onnxruntime", "pyserini")
REPO = Path(__file__).resolve().parent.parent


def git_commit(repo: Path = REPO) -> str | None:
    """The commit checked out in the source tree, with ``-dirty`` if tracked files were changed."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an installed wheel), or git is missing
    return head + ("-dirty" if dirty else "")


def versions(packages=PACKAGES) -> dict[str, str]:
    """Installed versions of the packages results depend on (absent ones left out)."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def relative_command(argv: list[str] | None = None, base: Path | None = None) -> list[str]:
    """The command line with absolute paths under ``base`` (the working folder) made relative."""
    argv = list(sys.argv if argv is None else argv)
    base = Path(base or os.getcwd())

    def rel(arg: str) -> str:
        key, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if os.path.isabs(value):
            try:
                value = os.path.relpath(value, base)
            except ValueError:  # another drive
                pass
        return key + eq + value

    if argv and argv[0].endswith(("/starbucks", "/__main__.py")):
        argv[0] = "starbucks" if argv[0].endswith("/starbucks") else Path(argv[0]).parent.name
    return [rel(a) for a in argv]


def provenance(command: list[str] | None = None) -> dict:
    """The fields every results file carries: ``command``, ``git_commit`` and ``versions``."""
    return {"command": relative_command(command), "git_commit": git_commit(), "versions": versions()}
