"""`rig watch`: follow public-inbox inboxes, vet each umem/GUP series as it arrives and answer
on its thread (docs/watch.md)."""

from __future__ import annotations

import signal

from rig.commands import cache_of
from rig.core.progress import Progress
from rig.core.status import ExitStatus, RigError
from rig.core.text import printable
from rig.flows import config, watch

OPTIONS = ("config", "build")


def add_parser(sub):
    p = sub.add_parser("watch", help="follow the lists: vet each series and answer on its thread",
                       description="Follow public-inbox inboxes ([watch] inboxes, or --inbox), "
                       "vet every series touching the umem/GUP code (rig/data/"
                       "watch-patterns.toml) one at a time, and write the answers into the "
                       "outbox maildir (or send them with --send).  Polls every [watch] "
                       "interval until interrupted, or once with --once.")
    p.add_argument("--once", action="store_true", help="poll once, vet the queue, and exit")
    p.add_argument("--status", action="store_true", help="list the queue and the answers")
    p.add_argument("--send", action="store_true",
                   help="also send each new answer over SMTP ([watch] smtp; the password "
                   "from its password_file or $RIG_SMTP_PASSWORD)")
    p.add_argument("--mute", metavar="MESSAGE-ID",
                   help="never answer (nor vet) the thread of this message, and exit")
    p.add_argument("--inbox", action="append", metavar="URL",
                   help="follow this inbox instead of [watch] inboxes (repeatable)")
    p.add_argument("--lab", metavar="NAME",
                   help="vet on this lab ([labs.NAME] in the config; docs/lab.md), not in a "
                   "local QEMU")
    return p


def _stop(signum, frame):
    raise KeyboardInterrupt          # a service manager's stop ends the daemon as Ctrl-C does


def run(args) -> ExitStatus:
    cache = cache_of(args)
    settings = watch.Settings.of(config.read(args.config), cache, tuple(args.inbox or ()))
    if args.status:
        print(watch.status(settings), end="")
        return ExitStatus.OK
    if args.mute:
        muted = watch.mute(settings, args.mute)
        print(f"watch: the thread of <{args.mute.strip('<>')}> is muted ({muted} series "
              "known to it not answered)")
        return ExitStatus.OK
    if not settings.inboxes:
        raise RigError("no inbox to follow: set [watch] inboxes in the config or give --inbox")

    def configure(out):
        return config.load(args.config, out=out, debug=args.debug, sandbox=args.sandbox,
                           lab=args.lab)

    configure(None)                  # a configuration the vets cannot use: refused at once

    with Progress() as progress:
        if not args.once:
            signal.signal(signal.SIGTERM, _stop)
            watch.daemon(settings, configure, cache, progress, args.send)   # until stopped
        poll = watch.once(settings, configure, cache, progress, args.send)
    for error in poll.errors:
        print(f"rig: refused: {printable(error)}")
    print(f"watch: {len(poll.arrived)} arrived, {len(poll.vetted)} vetted, "
          f"{len(poll.answered)} answered"
          + (f", {len(poll.recovered)} vets a killed run left re-queued" if poll.recovered
             else "")
          + (f", {len(poll.held)} held past [watch] per_hour" if poll.held else "")
          + f"; outbox: {settings.outbox}")
    return poll.status
