"""Vetting: test a patch or series from the list against the base, and say what it changes.

The series (an mbox, a .patch, a series folder, or a thread fetched from lore by Message-Id)
goes on top of the base variant, of the one named with --onto, or of the commit of the
maintainer's own tree (--tree) that the series names in its base-commit: line.  An mbox is
read as a thread (rig/kernel/thread.py): b4 reduces it to the newest complete revision, or,
asked for as partial, to the patches of it that came: they are vetted alone when they apply
without the others, and the summary says which were not vetted.  Both
kernels run the guest suite, the report is written as by a run, and a short plain-text
summary for a reply on the list: what was vetted (subject, author, Message-Id, revision, the
base commit and why), what it fixed and regressed with the observations that changed, the
kernel it ran on, and the command that reproduces the run.  Bad input (a series that cannot be
read, a tree that is not a clean git repository, a base-commit the tree lacks, a series that
does not apply at its base) is refused before anything is built or written.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rig.core import hostdeps
from rig.core.cache import Cache
from rig.core.model import Outcome, Patch, Variant
from rig.core.progress import Progress
from rig.core.status import RigError
from rig.core.text import variant_name
from rig.flows.config import RunConfig
from rig.flows.matrix import Runner, RunOutput, write_outputs
from rig.kernel import machinery, sandbox, sources, thread, tree
from rig.kernel import patches as patchlib
from rig.results import report
from rig.results.compare import Comparison, base_summary
from rig.results.schema import VariantResult, Verdict

SUMMARY = "vet-summary.txt"
SERIES = "series.mbx"            # the revision vetted, as `git am` takes it (from a thread)
THREAD = "thread.mbox"           # the thread fetched with --msgid
LIMIT = 10                       # cells of one kind listed before pointing to the report
_NOT_RUN = {
    Outcome.PATCH_FAILED: "The series does not apply",
    Outcome.BUILD_FAILED: "The kernel with the series does not build",
    Outcome.BOOT_FAILED: "The kernel with the series did not boot",
    Outcome.PANICKED: "The kernel with the series panicked while booting",
    Outcome.HUNG: "The kernel with the series hung while booting",
    Outcome.INFRA_ERROR: "The rig could not test the series",
}


@dataclass(frozen=True)
class VetRequest:
    """What to vet and where: a series (SERIES, or the thread of MSGID) on the base variant
    or on a commit of TREE."""

    series: Path | None = None       # an mbox, a .patch, a series folder
    msgid: str = ""                  # or a thread on lore
    revision: int | None = None      # of the thread; None: the newest
    tree: Path | None = None         # the maintainer's kernel git tree
    base: str = ""                   # the commit of TREE to vet on, over the series' own
    command: tuple[str, ...] = ()    # the command as given, words, for the reproduce line
    partial: bool = False            # vet the patches there are when some never came


@dataclass(frozen=True)
class Vetted:
    """What was vetted: the series as it came, and the commit it went on."""

    patches: tuple[Patch, ...]
    source: str                      # the file, or <Message-Id> for a fetched thread
    subject: str
    author: str
    message_id: str                  # the cover letter's, else the first patch's
    revision: int | None = None      # None: not read as a thread (a folder, a bare diff)
    revisions: tuple[int, ...] = ()  # every revision the thread holds
    base_commit: str = ""            # what the series' base-commit: line names
    base: tree.Base | None = None    # with a tree: the commit vetted on, and why
    mbox: bytes = b""                # the revision as `git am` takes it (from a thread)
    thread: bytes = b""              # the thread fetched from lore
    missing: tuple[str, ...] = ()    # "2/3", ...: patches of the series not vetted

    @property
    def title(self) -> str:
        rev = f"v{self.revision}" if self.revision else ""
        others = [f"v{r}" for r in self.revisions if r != self.revision]
        if others:
            rev += f"; the thread also has {', '.join(others)}"
        return f"{self.subject} ({rev})" if rev else self.subject


def _is_mbox(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(5) == b"From "
    except OSError:
        return False


def read_series(req: VetRequest, cache: Cache) -> Vetted:
    """The series REQ names, read and checked; raises RigError for anything unusable."""
    if req.msgid:
        found, fetched = thread.fetch(req.msgid, req.revision, req.partial)
        return _from_thread(found, cache, fetched)
    assert req.series is not None
    if req.series.is_file() and _is_mbox(req.series):
        return _from_thread(thread.reduce(req.series, req.revision, req.partial), cache)
    if req.revision is not None:
        raise RigError(f"{req.series}: --revision picks a revision of a thread, and this is "
                       "not an mbox")
    try:
        patches = tuple(patchlib.load(req.series, req.partial))
    except patchlib.IncompleteSeries as exc:
        raise RigError(f"{exc}: --partial vets the patches there are, without them") from None
    first = patches[0]
    return Vetted(patches, str(req.series), first.subject, first.author, first.message_id,
                  missing=patchlib.gaps(patches))


def _from_thread(found: thread.Series, cache: Cache, fetched: bytes = b"") -> Vetted:
    mbox = found.mbox()
    with cache.scratch("series") as scratch:     # read as the rig reads any mbox
        (scratch / SERIES).write_bytes(mbox)
        patches = tuple(patchlib.load(scratch / SERIES, partial=bool(found.missing)))
    return Vetted(patches, found.source, found.subject, found.author, found.message_id,
                  found.revision, found.revisions, found.base_commit, mbox=mbox, thread=fetched,
                  missing=found.missing)


def candidate(onto: Variant, series: Sequence[Patch], path: Path, title: str = "") -> Variant:
    """ONTO plus SERIES, named for the file or folder it came from."""
    name = variant_name(path.name if path.is_dir() else path.stem)
    if name == onto.name:
        name += "-candidate"
    return Variant(name, onto.source, onto.fragments, onto.patches + tuple(series),
                   title or str(path))


def _onto(cfg: RunConfig, vetted: Vetted) -> Variant:
    if vetted.base is not None:
        return Variant(vetted.base.name, vetted.base.source, cfg.fragments)
    onto = cfg.variant(cfg.base)
    if onto.name in cfg.unloadable:
        raise RigError(f"cannot vet on top of {onto.name}: {cfg.unloadable[onto.name]}")
    return onto


def _check_applies(cfg: RunConfig, cache: Cache, onto: Variant, vetted: Vetted) -> None:
    """Refuse a series that does not apply where it is going, before anything is built;
    git apply runs in the sandbox, as when the series is built."""
    try:
        confine = sandbox.decide(cfg.sandbox, untrusted=True)
    except sandbox.SandboxUnavailable as exc:
        raise RigError(str(exc)) from None
    source = sources.prepare(onto.source, cache)
    with cache.scratch("apply") as scratch:
        applied = patchlib.dry_run(source.tree, onto.patches + vetted.patches, scratch,
                                   confine.settings)
    if not applied.ok:
        where = (f"{vetted.base.source.path} at {vetted.base.described}" if vetted.base
                 else f"{onto.name} ({onto.source.name} {source.version})")
        what = (f"the patches of the series there are do not apply without patch "
                f"{', '.join(vetted.missing)}" if vetted.missing else "the series does not apply")
        raise RigError(f"{vetted.source}: {what} on {where}: {applied.message}")


def reproduce(req: VetRequest, vetted: Vetted) -> str:
    """The command as given, with what the rig chose pinned: the revision of a thread (a
    newer one may come), the base commit when it was the tree's HEAD (HEAD moves), and
    --partial where patches were missing (the list follower's vet)."""
    words = list(req.command)
    if vetted.base is not None and "--tree" not in words:
        words += ["--tree", str(vetted.base.source.path)]
    if vetted.revision is not None and req.revision is None and (
            len(vetted.revisions) > 1 or req.msgid):
        words += ["--revision", str(vetted.revision)]
    if vetted.base is not None and not req.base and not vetted.base_commit:
        words += ["--base", vetted.base.commit]
    if vetted.missing and "--partial" not in words:
        words.append("--partial")
    return shlex.join(words)


def _release(v: VariantResult) -> str:
    return f"kernel {v.environment.kernel_release}" if v.environment.kernel_release else ""


def _kernel(v: VariantResult) -> str:
    env = v.environment
    release = f" ({_release(v)})" if _release(v) else ""
    version = env.source_version[:12] if env.base_commit_from else env.source_version
    return f"{env.source} {version}{release}".strip()


def summary(comparison: Comparison, name: str, vetted: Vetted, command: str) -> str:
    """The reply: what was vetted, the verdict, fixed/regressed/changed cells, environment
    (templates/vet-summary.txt.j2)."""
    vc = next(v for v in comparison.variants if v.name == name)
    base, cand = comparison.base, vc.variant
    return report.render_template(
        "vet-summary.txt.j2", vetted=vetted, series=vetted.patches, base=base, cand=cand, vc=vc,
        machinery=machinery.files(vetted.patches), limit=LIMIT, command=command,
        not_run=_NOT_RUN.get(cand.outcome, cand.outcome.value), base_summary=base_summary(base),
        crashed=[t.id for t in cand.tests if t.verdict is Verdict.CRASHED],
        env=(cand if cand.has_verdict else base).environment, onto=len(base.environment.patches),
        base_kernel=_kernel(base), cand_release=_release(cand))


@dataclass(frozen=True)
class VetOutput:
    run: RunOutput
    candidate: str                   # the candidate variant's name
    summary: Path                    # vet-summary.txt


def _annotate(results, onto: Variant, cand: Variant, vetted: Vetted) -> None:
    """What the results cannot know from the variants alone: the series' Message-Id, and
    the tree's remote and why this base commit."""
    for v in results.variants:
        if v.name == cand.name:
            v.environment.message_id = vetted.message_id
        if vetted.base is not None and v.name in (onto.name, cand.name):
            v.environment.base_commit_from = vetted.base.reason
            v.environment.repository = vetted.base.repository


def vet(cfg: RunConfig, cache: Cache, progress: Progress, req: VetRequest) -> VetOutput:
    """Run the base (CFG's, already the --onto variant if any, or the tree's commit) and it
    plus the series; write the reports and the summary.  Bad input raises before any work
    is written."""
    vetted = read_series(req, cache)
    if req.tree is not None:
        root = tree.open_tree(req.tree)
        vetted = dataclasses.replace(vetted, base=tree.base(root, vetted.base_commit, req.base))
    elif req.base:
        raise RigError("--base names a commit of a tree: give the tree with --tree (or set "
                       "[vet] tree)")
    onto = _onto(cfg, vetted)
    # The check that the series applies needs the source and the sandbox only: a series that
    # does not apply is refused before the build's packages are installed.
    hostdeps.ensure(["source", "sandbox"], cfg.install_packages, log=progress.log)
    _check_applies(cfg, cache, onto, vetted)
    hostdeps.ensure(["build"], cfg.install_packages, log=progress.log)
    # a thread fetched by Message-Id is named for the Message-Id's local part
    named = Path(req.msgid.strip("<>").split("@")[0][:40]) if req.msgid else Path(vetted.source)
    cand = candidate(onto, vetted.patches, named, f"{vetted.title} from {vetted.source}")
    runner = Runner(dataclasses.replace(cfg, variants=[onto, cand], base=onto.name), cache,
                    progress)
    results = runner.results()
    _annotate(results, onto, cand, vetted)
    out = write_outputs(results, cfg.out)
    if vetted.mbox:
        (out.out / SERIES).write_bytes(vetted.mbox)
    if vetted.thread:
        (out.out / THREAD).write_bytes(vetted.thread)
    path = out.out / SUMMARY
    path.write_text(summary(out.comparison, cand.name, vetted, reproduce(req, vetted)))
    return VetOutput(out, cand.name, path)
