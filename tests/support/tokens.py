"""The consoles in tests/fixtures were captured before markers carried a token: TOKENED()
gives one as the rig's plugin writes it today, with TOKEN on each of the rig's markers."""

from rig.guest import markers

TOKEN = "5f0c1e2d3a4b5c6d7e8f90a1b2c3d4e5"


def tokened(console: str, token: str = TOKEN) -> str:
    return console.replace("umem-rig: test ", f"{markers.prefix(token)}test ").replace(
        "umem-rig: run ", f"{markers.prefix(token)}run ")
