"""`rig sources [SUITE]...`: what each Debian suite the configuration names offers today."""

from __future__ import annotations

from rig.commands import settings
from rig.core.status import ExitStatus
from rig.kernel.sources import suite_offers

OPTIONS = ("config",)


def add_parser(sub):
    p = sub.add_parser("sources", help="list the kernel packages and versions each Debian "
                       "suite of the configuration offers today")
    p.add_argument("debian_suite", nargs="*", metavar="SUITE", help="a suite to list as well (bookworm, "
                   "bookworm-security, trixie, trixie-backports, sid, experimental)")
    return p


def run(args) -> ExitStatus:
    cfg, cache = settings(args)
    status = ExitStatus.OK
    for offer in suite_offers(cfg.sources, cache, args.debian_suite):
        print(f"{offer.suite}:")
        for package, version in offer.packages.items():
            users = ", ".join(s for s, p in offer.sources.items() if p == package)
            used = f"  source {users}" if users else ""
            print(f"  {package:<22} {version:<24}{used}".rstrip())
        for source, package in offer.missing().items():
            status = ExitStatus.NO_VERDICT
            print(f"  source {source}: {package} is not in {offer.suite}")
    return status
