"""Where the tests' files are."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
FIXTURES = TESTS / "fixtures"
PROJECT = TESTS.parent
