"""Bare virtual environments for tests of what a user installs alone (the client, a generated
client): a venv with only the given packages, and a script run in it outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def bare_venv(folder: Path, *packages: str) -> Path:
    """A new venv at `folder` with `packages` installed; its bin/ folder."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = subprocess.run([str(folder / "bin" / "pip"), "install", "-q", *packages], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-3000:]
    return folder / "bin"


def run_alone(bin_dir: Path, script: str, *args: str, cwd: Path, timeout: float) -> str:
    """`script` run by the venv's python in `cwd` (not the repository: nothing of it can be imported
    by accident), with nothing of this process's environment but PATH; its stdout."""
    done = subprocess.run(
        [str(bin_dir / "python"), "-c", script, *args],
        cwd=cwd,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
