"""`rig export --kcidb RESULTS.json`: a run's results as a KernelCI KCIDB document."""

from __future__ import annotations

import json
from pathlib import Path

from rig.core.status import ExitStatus, RigError
from rig.flows.config import read as read_config
from rig.results import kcidb
from rig.results import schema as resultslib

OPTIONS = ("config",)


def add_parser(sub):
    p = sub.add_parser("export", help="write a run's results for another system (KCIDB)",
                       description="Write a results.json as a KernelCI KCIDB document "
                       f"(schema {kcidb.SCHEMA['major']}.{kcidb.SCHEMA['minor']}, checked with "
                       "kcidb-io's validator), ready for kcidb-submit.")
    p.add_argument("results", type=Path, metavar="RESULTS.json")
    p.add_argument("--kcidb", action="store_true", required=True,
                   help="as a KCIDB document (the one format there is)")
    p.add_argument("--origin", help="KCIDB origin, the prefix of every id "
                   "(default: the [kcidb] origin setting)")
    p.add_argument("--artifacts-url", metavar="URL",
                   help="where the results' directory is published, for the links to the "
                   "patch files (default: a file:// URL of it)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="where to write (default: kcidb.json beside RESULTS.json)")
    return p


def run(args) -> ExitStatus:
    origin = args.origin or read_config(args.config)["kcidb"]["origin"]
    doc = kcidb.export(resultslib.load(args.results), origin, args.results.parent,
                       args.artifacts_url)
    output = args.output or args.results.parent / "kcidb.json"
    try:
        output.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    except OSError as exc:
        raise RigError(f"{output}: cannot write it: {exc.strerror}") from None
    counts = ", ".join(f"{len(doc[k])} {k}" for k in ("checkouts", "builds", "tests"))
    print(f"{output}: KCIDB {kcidb.SCHEMA['major']}.{kcidb.SCHEMA['minor']}, {counts}")
    return ExitStatus.OK
