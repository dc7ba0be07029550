"""Plays a captured console log back on stdout the way QEMU's serial port delivers it.

    python replay_console.py LOG CHUNK PAUSE AFTER

Writes LOG in CHUNK-byte pieces with PAUSE seconds between them, then either exits
(AFTER=exit: QEMU ended) or stays alive and silent (AFTER=hang: a hung guest, or an idle one).
"""

import os
import sys
import time
import tty
from pathlib import Path

log, chunk, pause, after = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
data = Path(log).read_bytes()
# The log holds the bytes exactly as QEMU's tty delivered them: no second \n -> \r\n.
tty.setraw(1)
for i in range(0, len(data), chunk):
    os.write(1, data[i:i + chunk])
    time.sleep(pause)
if after == "hang":
    time.sleep(3600)
