"""Bare virtual environments for tests of what a user installs alone (the client, a generated
client): a venv with only the given packages, and a script run in it outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def bare_venv(folder: Path, *packages: str) -> Path:
    """A new venv at `folder` with `packages` installed; its bin/ folder. Without pip of its own:
    this process's pip installs into it (`pip --python`), which skips ensurepip, about 4 s of CPU
    a venv, and leaves the venv barer still."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    pip(folder / "bin", "install", "-q", *packages)
    return folder / "bin"


def pip(bin_dir: Path, *args: str) -> str:
    """pip run on the venv of `bin_dir`; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


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
