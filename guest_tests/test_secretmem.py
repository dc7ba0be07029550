"""memfd_secret: memory the process keeps even from the kernel, which no device may reach.

One rule judges every MR kind over it: the device never reads or writes the secret.  A pinned
registration must fail (GUP refuses secretmem); an ODP one may succeed, but every access through
it must fail with a remote access error, and neither the secret bytes nor a write may cross.
"""

from __future__ import annotations

import pytest
from cells import cell_params
from loopback import ADVISE_FLAG_FLUSH, CompletionError
from regions import ACCESSES, LENGTH, ODP_ACCESSES, REGIONS, classify

SECRET = [k for k in REGIONS if k.secret]


@pytest.mark.parametrize("kind,access", cell_params(regions=SECRET,
                                                   accesses=ACCESSES + ODP_ACCESSES))
def test_secretmem(kind, access, open_cell, loopback, obs):
    """The device never reads or writes the process's secret memory: a pinned registration
    fails, and every access through an ODP MR fails with a remote access error."""
    with open_cell(kind, access) as cell:
        if not access.odp:
            assert not obs["registered"], "a pinned MR was registered over secret memory"
            return
        if not obs["registered"]:
            return                          # refused at registration: nothing reached
        secret = cell.region.old
        obs["advise_errno"] = loopback.advise(cell.mr, "PREFETCH", ADVISE_FLAG_FLUSH, LENGTH)
        try:
            data, fill = loopback.rdma_read(cell.mr, LENGTH)
            obs["rdma_read_status"] = "IBV_WC_SUCCESS"
            obs["rdma_read_pages"] = classify(data, secret=secret, poison=fill)
        except CompletionError as exc:
            obs["rdma_read_status"] = exc.status
        if access.writable:
            obs["rdma_write_status"] = loopback.write_status(cell.mr, cell.pattern("rdma-write"))
        obs["process_read_pages"] = cell.read_process(secret=secret)
        obs["read_after_error"] = "ok" if loopback.works() else "failed"
        assert "secret" not in obs.get("rdma_read_pages", []), \
            f"the device read the secret: {obs['rdma_read_pages']}"
        assert obs["process_read_pages"] == ["secret"] * len(obs["process_read_pages"]), \
            f"the secret changed behind the process: {obs['process_read_pages']}"
        assert obs["rdma_read_status"] == "IBV_WC_REM_ACCESS_ERR", (
            f"an RDMA READ of secret memory completed with {obs['rdma_read_status']}")
        if access.writable:
            assert obs["rdma_write_status"] == "IBV_WC_REM_ACCESS_ERR", (
                f"an RDMA WRITE to secret memory completed with {obs['rdma_write_status']}")
        assert obs["read_after_error"] == "ok", "the QPs did not work again after the access"
