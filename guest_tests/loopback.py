"""Two RC queue pairs on one RDMA device, connected to each other.

QP "a" posts RDMA READs and WRITEs; QP "b" is the responder, so any MR of the shared PD can be
read and written from outside the process's page tables, the way a remote peer would.

Before every READ the local buffer is filled with poison that no test ever writes, so a READ that
moves no data (or fewer bytes) leaves bytes that match nothing a test expects.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import struct
import time
from dataclasses import dataclass

import pyverbs.enums as e
from pyverbs.addr import AHAttr, GlobalRoute
from pyverbs.cq import CQ
from pyverbs.device import Context
from pyverbs.mr import MR
from pyverbs.pd import PD
from pyverbs.pyverbs_error import PyverbsRDMAError
from pyverbs.qp import QP, QPAttr, QPCap, QPInitAttr
from pyverbs.wr import SGE, SendWR

PORT = 1
IPV4_MAPPED_PREFIX = "0000:0000:0000:0000:0000:ffff:"
QP_ACCESS = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_READ | e.IBV_ACCESS_REMOTE_WRITE
COMPLETION_TIMEOUT = 10.0
PROBE_SIZE = 64
UVERBS_DEV = "/dev/infiniband/uverbs"
# include/uapi/rdma/ib_user_verbs.h: the write() command ibv_rereg_mr() sends (rdma-core 44's
# rxe provider has no rereg_mr, so the library answers EOPNOTSUPP without asking the kernel)
IB_USER_VERBS_CMD_REREG_MR = 11
IB_MR_REREG_ACCESS = 1 << 2
_HDR = struct.Struct("<IHH")                   # command, in_words, out_words
_REREG = struct.Struct("<QIIQQQII")            # response, mr_handle, flags, start, length,
                                               # hca_va, pd_handle, access_flags
_REREG_RESP = struct.Struct("<II")             # lkey, rkey
# ibv_advise_mr() as the kernel sees it (include/uapi/rdma/ib_user_ioctl_cmds.h): rdma-core 44's
# rxe provider has no advise_mr, so the library answers EOPNOTSUPP without asking the kernel;
# the ioctl itself asks it.  RDMA_VERBS_IOCTL = _IOWR(0x1b, 1, struct ib_uverbs_ioctl_hdr).
RDMA_VERBS_IOCTL = 0xC0181B01
UVERBS_OBJECT_MR, UVERBS_METHOD_ADVISE_MR = 7, 2
ADVISE_PD_HANDLE, ADVISE_ADVICE, ADVISE_FLAGS, ADVISE_SGE_LIST = range(4)
ADVICES = {"PREFETCH": 0, "PREFETCH_WRITE": 1, "PREFETCH_NO_FAULT": 2}
ADVISE_FLAG_FLUSH = 1
RDMA_DRIVER_RXE = 14                           # enum rdma_driver_id: the header must name it
_IOCTL_HDR = struct.Struct("<HHHHQII")         # length, object, method, num_attrs, reserved,
                                               # driver_id, reserved
_IOCTL_ATTR = struct.Struct("<HHHHQ")          # attr_id, len, flags, attr_data, data
_SGE = struct.Struct("<QII")                   # addr, length, lkey


def errno_name(err: int) -> str:
    """ERR named as the kernel names it: Python calls 95 ENOTSUP, the kernel's code returns
    -EOPNOTSUPP."""
    return "EOPNOTSUPP" if err == errno.EOPNOTSUPP else errno.errorcode.get(err, str(err))


class VerbsError(Exception):
    """A verbs command the kernel refused, with its errno."""

    def __init__(self, what: str, err: int):
        self.errno = err
        self.name = errno_name(err)
        super().__init__(f"{what} failed: {self.name}")


class CompletionError(RuntimeError):
    """A work request that completed with an error status (the QPs are connected again)."""

    def __init__(self, opcode: int, status: int):
        self.status = e.ibv_wc_status(status).name
        super().__init__(f"RDMA {e.ibv_wr_opcode(opcode).name} completed with {self.status}")


@dataclass(frozen=True)
class Target:
    """Where a remote peer reaches an MR: its rkey and address."""
    rkey: int
    addr: int


def poison(length: int, serial: int) -> bytes:
    """LENGTH bytes no test writes: a different fill before every READ."""
    return hashlib.shake_256(f"poison/{serial}".encode()).digest(length)


def uverbs_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith(UVERBS_DEV):
                fds.add(int(name))
        except OSError:
            pass                    # the fd listdir itself used, closed by now
    return fds


def roce_v2_ipv4_gid(ctx: Context, port: int) -> int:
    """Index of the RoCE v2 GID that carries the interface's IPv4 address (not index 0)."""
    seen = []
    for index in range(ctx.query_port(port).gid_tbl_len):
        gid = ctx.query_gid(port, index).gid
        if (gid.startswith(IPV4_MAPPED_PREFIX)
                and ctx.query_gid_type(port, index) == e.IBV_GID_TYPE_SYSFS_ROCE_V2):
            return index
        seen.append(gid)
    raise RuntimeError(f"no RoCE v2 GID with an IPv4 address on port {port}; GID table: {seen} "
                       "(is the netdev under the rxe device up with an IPv4 address?)")


class Loopback:
    def __init__(self, device: str, bounce_size: int):
        before = uverbs_fds()
        self.ctx = Context(name=device)
        opened = uverbs_fds() - before
        if len(opened) != 1:
            raise RuntimeError(f"cannot tell the uverbs file of {device} (new: {opened})")
        self.cmd_fd = opened.pop()
        self.reads = 0
        self.gid_index = roce_v2_ipv4_gid(self.ctx, PORT)
        self.odp_caps = self.ctx.query_device_ex().odp_caps
        self.pd = PD(self.ctx)
        self.cq = CQ(self.ctx, 16)
        init = QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.cq, rcq=self.cq,
                          cap=QPCap(max_send_wr=4, max_recv_wr=4))
        self.a = QP(self.pd, init)
        self.b = QP(self.pd, init)
        self.connect()
        # the local end of every transfer: plain memory pyverbs allocates
        self.bounce = MR(self.pd, bounce_size, e.IBV_ACCESS_LOCAL_WRITE)
        self.bounce_size = bounce_size
        # a pinned MR of plain memory that any READ can reach: whether the QPs work at all
        self.probe = MR(self.pd, PROBE_SIZE, e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_READ)

    def _rts_attr(self, peer: QP) -> QPAttr:
        attr = QPAttr(port_num=PORT)
        attr.qp_access_flags = QP_ACCESS
        attr.path_mtu = e.IBV_MTU_1024
        attr.dest_qp_num = peer.qp_num
        attr.rq_psn = attr.sq_psn = 0
        attr.max_rd_atomic = attr.max_dest_rd_atomic = 1
        attr.min_rnr_timer, attr.timeout, attr.retry_cnt, attr.rnr_retry = 12, 14, 7, 7
        gid = self.ctx.query_gid(PORT, self.gid_index)
        attr.ah_attr = AHAttr(port_num=PORT, is_global=1,
                              gr=GlobalRoute(dgid=gid, sgid_index=self.gid_index))
        return attr

    def connect(self) -> None:
        """(Re)connect the pair from any state: a failed work request leaves both in error."""
        for qp, peer in ((self.a, self.b), (self.b, self.a)):
            qp.modify(QPAttr(qp_state=e.IBV_QPS_RESET), e.IBV_QP_STATE)
            qp.to_rts(self._rts_attr(peer))
        while self.cq.poll(1)[0]:
            pass                    # completions of the failed work, flushed

    def register(self, addr: int, length: int, access: int) -> MR:
        try:
            return MR(self.pd, length, access, address=addr)
        except PyverbsRDMAError as exc:
            raise VerbsError("ibv_reg_mr", exc.error_code) from None

    def rereg_access(self, mr: MR, access: int) -> Target:
        """ibv_rereg_mr(IBV_REREG_MR_CHANGE_ACCESS) as the kernel sees it: the uverbs write()
        command itself.  Returns where the MR is reached now; raises VerbsError."""
        resp = bytearray(_REREG_RESP.size)
        buf = (ctypes.c_char * len(resp)).from_buffer(resp)
        cmd = _REREG.pack(ctypes.addressof(buf), mr.handle, IB_MR_REREG_ACCESS, 0, 0, 0, 0,
                          access)
        words = (_HDR.size + len(cmd)) // 4
        try:
            os.write(self.cmd_fd, _HDR.pack(IB_USER_VERBS_CMD_REREG_MR, words,
                                            len(resp) // 4) + cmd)
        except OSError as exc:
            raise VerbsError("rereg_mr(IB_MR_REREG_ACCESS)", exc.errno) from None
        _lkey, rkey = _REREG_RESP.unpack(resp)
        return Target(rkey, mr.buf)

    def odp_unsupported(self, writable: bool) -> str:
        """Why an ODP MR cannot be tested here ("" when it can): the device's ODP caps for RC
        RDMA READ (and WRITE for a writable MR), as ibv_query_device_ex() reports them."""
        caps = self.odp_caps
        if not caps.general_caps & e.IBV_ODP_SUPPORT:
            return "the device reports no on-demand paging (odp_caps.general_caps)"
        need = e.IBV_ODP_SUPPORT_READ | (e.IBV_ODP_SUPPORT_WRITE if writable else 0)
        if caps.rc_odp_caps & need != need:
            return (f"the device's RC ODP caps {caps.rc_odp_caps:#x} lack RDMA READ"
                    f"{' or WRITE' if writable else ''}")
        return ""

    def advise(self, mr: MR, advice: str, flags: int, length: int) -> str | None:
        """ibv_advise_mr(ADVICE, FLAGS) on the first LENGTH bytes of MR: None where the kernel
        accepted it, else the errno's name."""
        sge = _SGE.pack(mr.buf, length, mr.lkey)
        sge_buf = ctypes.create_string_buffer(sge, len(sge))
        attrs = [_IOCTL_ATTR.pack(ADVISE_PD_HANDLE, 0, 0, 0, self.pd.handle),
                 _IOCTL_ATTR.pack(ADVISE_ADVICE, 8, 0, 0, ADVICES[advice]),
                 _IOCTL_ATTR.pack(ADVISE_FLAGS, 8, 0, 0, flags),
                 _IOCTL_ATTR.pack(ADVISE_SGE_LIST, len(sge), 0, 0,
                                  ctypes.addressof(sge_buf))]
        cmd = bytearray(_IOCTL_HDR.pack(_IOCTL_HDR.size + _IOCTL_ATTR.size * len(attrs),
                                        UVERBS_OBJECT_MR, UVERBS_METHOD_ADVISE_MR, len(attrs),
                                        0, RDMA_DRIVER_RXE, 0) + b"".join(attrs))
        try:
            fcntl.ioctl(self.cmd_fd, RDMA_VERBS_IOCTL, cmd)
        except OSError as exc:
            return errno_name(exc.errno)
        return None

    def _post(self, opcode: int, target: Target, length: int) -> None:
        wr = SendWR(opcode=opcode, num_sge=1, sg=[SGE(self.bounce.buf, length, self.bounce.lkey)],
                    send_flags=e.IBV_SEND_SIGNALED)
        wr.set_wr_rdma(target.rkey, target.addr)
        self.a.post_send(wr)
        deadline = time.monotonic() + COMPLETION_TIMEOUT
        while time.monotonic() < deadline:
            n, wcs = self.cq.poll(1)
            if n:
                if wcs[0].status != e.IBV_WC_SUCCESS:
                    self.connect()
                    raise CompletionError(opcode, wcs[0].status)
                return
        self.connect()
        raise TimeoutError(f"no completion for RDMA {e.ibv_wr_opcode(opcode).name} "
                           f"within {COMPLETION_TIMEOUT} s")

    def rdma_read(self, target: MR | Target, length: int) -> tuple[bytes, bytes]:
        """What the device reads from the MR, as a remote peer would, and the poison the
        buffer held before (what the result still is wherever the READ moved nothing)."""
        self.reads += 1
        fill = poison(self.bounce_size, self.reads)
        self.bounce.write(fill, len(fill))
        self._post(e.IBV_WR_RDMA_READ, _target(target), length)
        return self.bounce.read(self.bounce_size, 0), fill

    def works(self) -> bool:
        """Whether an RDMA READ of the probe MR completes (after a failed one: the pair was
        connected again)."""
        try:
            self.rdma_read(self.probe, PROBE_SIZE)
        except (CompletionError, TimeoutError):
            return False
        return True

    def rdma_write(self, target: MR | Target, data: bytes) -> None:
        """Have the device write DATA into the MR, as a remote peer would."""
        self.bounce.write(data, len(data))
        self._post(e.IBV_WR_RDMA_WRITE, _target(target), len(data))

    def write_status(self, target: MR | Target, data: bytes) -> str:
        """rdma_write(), as the completion status it ended with (IBV_WC_SUCCESS, ...)."""
        try:
            self.rdma_write(target, data)
        except CompletionError as exc:
            return exc.status
        return "IBV_WC_SUCCESS"

    def close(self) -> None:
        self.ctx.close()


def _target(target: MR | Target) -> Target:
    return target if isinstance(target, Target) else Target(target.rkey, target.buf)
