"""The real command line, as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

from support.paths import PROJECT


def rig(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    """The real command, with a throw-away cache and HOME, from a throw-away directory."""
    env = dict(os.environ, RIG_CACHE=str(tmp_path / "cache"), HOME=str(tmp_path / "home"),
               RIG_PROJECT=str(PROJECT))
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "rig.cli", *argv], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120, check=False)
