"""Helpers the host tests share: scratch repositories and threads, a LAVA lab, a console replayed, running as nobody."""
