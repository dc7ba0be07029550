"""Golden outputs: what the rig writes for a fixture, kept in tests/fixtures/golden/ so a
change to a report, a JUnit file, a KCIDB document or a summary shows as a diff to review.

`RIG_RENDER=1 pytest tests` writes the outputs anew instead of comparing them; `git diff
tests/fixtures/golden` then shows what the change did to each.
"""

import difflib
import os

from support.paths import FIXTURES, PROJECT

GOLDEN = FIXTURES / "golden"
RENDER = os.environ.get("RIG_RENDER") == "1"


def matches(name: str, text: str) -> None:
    """TEXT is golden/NAME (with RIG_RENDER=1: becomes it); the checkout's own path, which
    differs between a worktree and CI's clone, is written <project>."""
    text = text.replace(str(PROJECT), "<project>")
    path = GOLDEN / name
    if RENDER:
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing: RIG_RENDER=1 writes it"
    want = path.read_text()
    diff = "".join(difflib.unified_diff(want.splitlines(keepends=True),
                                        text.splitlines(keepends=True),
                                        f"golden/{name}", "now", n=2))
    assert text == want, f"{name} changed (RIG_RENDER=1 to accept):\n{diff[:6000]}"
