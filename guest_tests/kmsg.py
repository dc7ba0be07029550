"""The kernel log lines logged while a test runs, and which of them mark a splat."""

from __future__ import annotations

import os
import re
from pathlib import Path

PATTERNS_FILE = Path(__file__).with_name("splat-patterns.txt")


def load_patterns(path: Path = PATTERNS_FILE) -> list[re.Pattern[str]]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [re.compile(line) for line in lines if line and not line.startswith("#")]


def splats(lines: list[str], patterns: list[re.Pattern[str]]) -> list[str]:
    return [line for line in lines if any(p.search(line) for p in patterns)]


def parse_record(record: bytes) -> str:
    """The message text of one /dev/kmsg record ("prio,seq,usec,flags;text" + dict lines)."""
    text = record.decode("utf-8", "replace").split("\n", 1)[0]
    return text.split(";", 1)[1] if ";" in text else text


class KernelLog:
    """Reads /dev/kmsg from the moment it is opened; every read returns one record."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def new_lines(self) -> list[str]:
        lines = []
        while True:
            try:
                record = os.read(self.fd, 8192)
            except BlockingIOError:
                return lines
            except BrokenPipeError:
                # the ring buffer overwrote records we had not read yet
                lines.append("umem-rig: kernel log records were lost before they were read")
                continue
            lines.append(parse_record(record))

    def close(self) -> None:
        os.close(self.fd)
