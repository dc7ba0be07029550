"""The `rig` command: one subcommand per way the rig is used."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import bisect, history, hostdeps, vet
from . import config as configlib
from .cache import Cache
from .progress import Progress
from .suites import SUITES

EXIT_OK, EXIT_REGRESSION, EXIT_NO_VERDICT = 0, 1, 2


def _common(p: argparse.ArgumentParser, run: bool = False) -> None:
    """Options every command shares; RUN adds those of the commands that run the matrix."""
    p.add_argument("--config", type=Path, help="TOML file merged over the embedded defaults")
    p.add_argument("--cache", type=Path, help="cache directory (default ~/.cache/umem-rig)")
    if run:
        p.add_argument("--accel", choices=["auto", "kvm", "tcg"])
        p.add_argument("--out", type=Path, help="output directory")
        p.add_argument("--debug", action="store_true", default=None,
                       help="add kconfigs/debug.config (DEBUG_VM, lockdep, KASAN)")


def _select(p: argparse.ArgumentParser) -> None:
    p.add_argument("--select", action="append", metavar="TEST",
                   help="run only these guest tests: test_x or test_x[cell] (repeatable)")


def _load(args, **kw) -> tuple[configlib.RunConfig, Cache]:
    cfg = configlib.load(args.config, **kw)
    return cfg, Cache(args.cache) if args.cache else Cache()


def cmd_build(args) -> int:
    from .build import Builder, BuildSettings
    cfg, cache = _load(args, variants=args.variant or None, debug=args.debug)
    hostdeps.ensure(["source", "build"], cfg.install_packages)
    progress = Progress()
    builder = Builder(BuildSettings(cfg.project / "guest_tests" / "driver", cfg.base_config,
                                    cfg.jobs), cache, progress)
    worst = EXIT_OK
    try:
        for variant in cfg.variants:
            if variant.name in cfg.unloadable:
                progress.log(f"{variant.name}: patch-failed: {cfg.unloadable[variant.name]}")
                worst = EXIT_NO_VERDICT
                continue
            with progress.stage(variant.name, "build"):
                result = builder.build(variant)
            if result.error:
                worst = EXIT_NO_VERDICT
                progress.log(f"{variant.name}: {result.outcome.value}: {result.error.message}")
                if result.error.excerpt:
                    progress.log(result.error.excerpt)
            else:
                hit = "cache hit" if result.cache_hit else "built"
                progress.log(f"{variant.name}: {hit} in {result.seconds:.1f}s -> "
                             f"{result.artefacts}")
    finally:
        progress.close()
    return worst


def _exit_line(out) -> str:
    return {EXIT_OK: "no regression", EXIT_REGRESSION: "REGRESSION found",
            EXIT_NO_VERDICT: "some variant has no verdict"}[out.exit_status]


def cmd_run(args) -> int:
    from .run import Runner
    cfg, cache = _load(args, variants=args.variant or None, extra_patches=args.patch,
                       accel=args.accel, out=args.out, debug=args.debug, suites=args.suite)
    progress = Progress()
    try:
        out = Runner(cfg, cache, progress, tuple(args.select or ())).run()
    finally:
        progress.close()
    print("\n".join(out.comparison.headline()))
    print(f"report: {(out.out / 'report.html').resolve()}")
    print(f"exit {out.exit_status}: {_exit_line(out)}")
    return out.exit_status


def cmd_report(args) -> int:
    from . import results as resultslib
    from .run import write_outputs
    res = resultslib.load(args.results)
    out = write_outputs(res, args.out or args.results.parent)
    print("\n".join(out.comparison.headline()))
    print(f"report: {(out.out / 'report.html').resolve()}")
    return out.exit_status


def cmd_image(args) -> int:
    from .image import ensure_image
    cache = Cache(args.cache) if args.cache else Cache()
    hostdeps.ensure(["image"], configlib.load(args.config).install_packages)
    img = ensure_image(cache)
    print(f"image {img.key[:16]}: {img.path} ({img.path.stat().st_size >> 20} MiB)")
    print(f"host key (pinned): {img.host_key_pub}")
    return EXIT_OK


def cmd_boot(args) -> int:
    from .boot_shell import boot_variant
    cfg, cache = _load(args, variants=[args.variant], accel=args.accel, debug=args.debug)
    hostdeps.ensure(["source", "build", "image", "boot"], cfg.install_packages)
    return boot_variant(cfg, cache, cfg.variant(args.variant), args.cmd)


def cmd_cache(args) -> int:
    cache = Cache(args.cache) if args.cache else Cache()
    if args.clear is not None:
        cache.clear(args.clear or None)
        print(f"cleared {cache.root / args.clear if args.clear else cache.root}")
        return EXIT_OK
    print(cache.root)
    if cache.root.is_dir():
        for kind in sorted(p for p in cache.root.iterdir() if p.is_dir()):
            entries = [e for e in kind.iterdir() if not e.name.startswith(".")]
            print(f"  {kind.name:<8} {len(entries)} entries")
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="rig", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="build the variants' kernels and the test driver module")
    _common(p)
    p.add_argument("--variant", action="append", help="build only this variant (repeatable)")
    p.add_argument("--debug", action="store_true", default=None,
                   help="add kconfigs/debug.config (DEBUG_VM, lockdep, KASAN)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("run", help="the whole matrix: build, boot, test, compare, report")
    _common(p, run=True)
    _select(p)
    p.add_argument("--variant", action="append", help="run only this variant and the base")
    p.add_argument("--patch", action="append", type=Path, metavar="FILE|DIR",
                   help="add a candidate variant: the base plus this patch, series or mbox")
    p.add_argument("--suite", action="append", choices=list(SUITES),
                   help="run this test suite (repeatable; default: [run] suites of the "
                        "configuration); --select SUITE:TEST picks tests of one")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="re-render the reports from a results.json")
    p.add_argument("results", type=Path)
    p.add_argument("--out", type=Path, help="where to write (default: beside results.json)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("image", help="build the guest image, or show the cached one")
    _common(p)
    p.set_defaults(func=cmd_image)

    p = sub.add_parser("boot", help="boot one variant; a shell, or run CMD and return its status")
    _common(p)
    p.add_argument("variant")
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"])
    p.add_argument("--debug", action="store_true", default=None)
    p.set_defaults(func=cmd_boot)

    bisect.add_parser(sub, lambda p: _common(p, run=True))
    vet.add_parser(sub, lambda p: (_common(p, run=True), _select(p)))
    history.add_parser(sub)

    p = sub.add_parser("cache", help="show the cache, or clear it")
    p.add_argument("--cache", type=Path)
    p.add_argument("--clear", nargs="?", const="", metavar="KIND",
                   help="remove everything, or one kind (source, config, kernel, image, work)")
    p.set_defaults(func=cmd_cache)
    return top


def parse(argv: list[str]) -> argparse.Namespace:
    """Everything after "--" is the guest command of `rig boot`, options and all."""
    cmd: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, cmd = argv[:at], argv[at + 1:]
    args = parser().parse_args(argv)
    args.cmd = cmd
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except (configlib.ConfigFileError, hostdeps.MissingPackages) as exc:
        print(f"rig: {exc}", file=sys.stderr)
        return EXIT_NO_VERDICT
    except KeyboardInterrupt:
        print("rig: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
