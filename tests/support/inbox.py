"""A real public-inbox for the list follower's tests: an inbox made with public-inbox-init,
mails delivered with public-inbox-mda, served by public-inbox-httpd on loopback, its
configuration (PI_CONFIG) and home inside the test's folder; and the mails it holds, the
RFC's exact patch bytes among them (so its kernel is the one the other e2e tests build).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from rig.guest.qemu import free_port
from support import mkthread
from support.paths import PROJECT

LIST = "linux-rdma@umem-rig.invalid"
REVIEWER = ("Rev Iewer", "reviewer@umem-rig.invalid")
CC = "Mm Person <mm@umem-rig.invalid>"
RFC_PATCH = next((PROJECT / "patches" / "umem-rfc").glob("0001-*.patch"))
COVER_ID = "<cover.umem-rfc.1@umem-rig.invalid>"


def _headers(text: str, subject: str, message_id: str, in_reply_to: str = "") -> str:
    """TEXT (a git format-patch message) with the headers a mail sent to the list has."""
    head, body = text.split("\n\n", 1)
    kept = [line for line in head.split("\n") if line.startswith(("From:", "Date:"))]
    thread = [f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"] if in_reply_to else []
    return "\n".join([*kept, f"Subject: {subject}", f"Message-Id: {message_id}", *thread,
                      f"To: {LIST}", f"Cc: {CC}", "MIME-Version: 1.0",
                      "Content-Type: text/plain; charset=UTF-8", "", body])


def rfc_thread() -> list[str]:
    """patches/umem-rfc as a thread: a cover letter and the patch, its bytes unchanged."""
    patch = RFC_PATCH.read_text().split("\n", 1)[1]          # without git's "From <sha>"
    subject = mkthread.header(patch, "Subject").removeprefix("[PATCH] ")
    cover = (f"From: {mkthread.AUTHOR[0]} <{mkthread.AUTHOR[1]}>\n"
             "Date: Thu, 26 Nov 2026 13:37:24 +0000\n\n"
             "Read-only MRs pinned with the access userspace has, no FOLL_FORCE.\n\n"
             f"{mkthread.AUTHOR[0]} (1):\n  {subject}\n")
    return [_headers(cover, f"[PATCH RFC 0/1] {subject}", COVER_ID),
            _headers(patch, f"[PATCH RFC 1/1] {subject}", "<umem-rfc.1.1@umem-rig.invalid>",
                     COVER_ID)]


PARTIAL_COVER_ID = "<cover.gup-ro.1@umem-rig.invalid>"


def partial_thread() -> list[str]:
    """A three-patch series of which the list got the cover letter and 2/3 only (1/3 and 3/3
    went to lists it does not follow): 2/3 is patches/umem-rfc's patch, its bytes unchanged,
    and applies without the others."""
    patch = RFC_PATCH.read_text().split("\n", 1)[1]
    subject = mkthread.header(patch, "Subject").removeprefix("[PATCH] ")
    cover = (f"From: {mkthread.AUTHOR[0]} <{mkthread.AUTHOR[1]}>\n"
             "Date: Fri, 27 Nov 2026 11:00:00 +0000\n\n"
             "Read-only pins without FOLL_FORCE, from GUP up to the RDMA umem.\n\n"
             f"{mkthread.AUTHOR[0]} (3):\n  mm/gup: Say what FOLL_FORCE is for\n"
             f"  {subject}\n  mm/gup: Warn on FOLL_FORCE without FOLL_WRITE\n")
    return [_headers(cover, "[PATCH 0/3] Read-only long-term pins without FOLL_FORCE",
                     PARTIAL_COVER_ID),
            _headers(patch, f"[PATCH 2/3] {subject}", "<gup-ro.1.2@umem-rig.invalid>",
                     PARTIAL_COVER_ID)]


def review(patch: str) -> str:
    return mkthread.reply(patch, REVIEWER, "2026-11-27T09:00:00+00:00",
                          f"Reviewed-by: {REVIEWER[0]} <{REVIEWER[1]}>", 1)


UNRELATED = f"""From: Someone Else <else@umem-rig.invalid>
To: {LIST}
Date: Fri, 27 Nov 2026 10:00:00 +0000
Subject: [PATCH] net: fix a typo in a comment
Message-Id: <unrelated.1@umem-rig.invalid>

A typo.

Signed-off-by: Someone Else <else@umem-rig.invalid>
---
diff --git a/net/core/dev.c b/net/core/dev.c
--- a/net/core/dev.c
+++ b/net/core/dev.c
@@ -1,3 +1,3 @@
 // SPDX-License-Identifier: GPL-2.0-or-later
-/* teh network device layer */
+/* the network device layer */
 #include <linux/bpf.h>
"""


# a patch reaching out of the tree: refused by name before anything is built
HOSTILE = f"""From: Mallory <mallory@umem-rig.invalid>
To: {LIST}
Date: Fri, 27 Nov 2026 10:00:00 +0000
Subject: [PATCH] IB/umem: Tidy up
Message-Id: <tidy.1@umem-rig.invalid>

---
diff --git a/drivers/infiniband/core/umem.c b/drivers/infiniband/core/umem.c
--- a/drivers/infiniband/core/umem.c
+++ b/drivers/infiniband/core/umem.c
@@ -1 +1 @@
-// SPDX-License-Identifier: GPL-2.0 OR Linux-OpenIB
+// SPDX-License-Identifier: GPL-2.0 OR Linux-OpenIB.
diff --git a/../../../etc/rig-escape b/../../../etc/rig-escape
new file mode 100644
--- /dev/null
+++ b/../../../etc/rig-escape
@@ -0,0 +1 @@
+owned
"""


class Inbox:
    """A v2 inbox NAME in FOLDER with Xapian search (dfn: needs it), as lore's are."""

    def __init__(self, folder: Path, name: str = "rdma"):
        self.folder, self.name = folder, name
        self.env = dict(os.environ, PI_CONFIG=str(folder / "pi-config"),
                        HOME=str(folder / "home"))
        (folder / "home").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/{name}/"
        self._run("public-inbox-init", "-V2", "-L", "full", name, str(folder / name),
                  self.url, LIST)
        # spamc is not installed: without this public-inbox-mda exits 2
        self._run("git", "config", "-f", self.env["PI_CONFIG"], "publicinboxmda.spamcheck",
                  "none")

    def _run(self, *argv: str, stdin: str | None = None) -> None:
        subprocess.run(argv, env=self.env, check=True, input=stdin, text=True,
                       capture_output=True, timeout=120)

    def deliver(self, message: str) -> None:
        """MESSAGE into the inbox as the list's mail server would hand it over (mda drops,
        with status 0, a message whose To: or Cc: does not name the list)."""
        env = dict(self.env, ORIGINAL_RECIPIENT=LIST)
        subprocess.run(["public-inbox-mda"], env=env, check=True, input=message, text=True,
                       capture_output=True, timeout=120)

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """public-inbox-httpd on loopback (started after the inbox exists: it reads the
        configuration once); the inbox's URL."""
        with open(self.folder / "httpd.log", "w") as log:
            httpd = subprocess.Popen(["public-inbox-httpd", "-l",
                                      f"http://127.0.0.1:{self.port}"],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(self.url, timeout=5).close()
                    break
                except urllib.error.HTTPError:
                    break                      # it answers (an empty inbox is a 404)
                except OSError:
                    time.sleep(0.1)
            else:
                raise RuntimeError(f"public-inbox-httpd did not answer on {self.url}")
            yield self.url
        finally:
            httpd.terminate()
            httpd.wait(timeout=30)
