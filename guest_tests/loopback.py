"""Two RC queue pairs on one RDMA device, connected to each other.

QP "a" posts RDMA READs and WRITEs; QP "b" is the responder, so any MR of the shared PD can be
read and written from outside the process's page tables, the way a remote peer would.
"""

from __future__ import annotations

import errno
import time

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


class RegistrationError(Exception):
    def __init__(self, err: int):
        self.errno = err
        self.name = errno.errorcode.get(err, str(err))
        super().__init__(f"ibv_reg_mr failed: {self.name}")


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
        self.ctx = Context(name=device)
        self.gid_index = roce_v2_ipv4_gid(self.ctx, PORT)
        self.pd = PD(self.ctx)
        self.cq = CQ(self.ctx, 16)
        init = QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.cq, rcq=self.cq,
                          cap=QPCap(max_send_wr=4, max_recv_wr=4))
        self.a = QP(self.pd, init)
        self.b = QP(self.pd, init)
        self.connect()
        # the local end of every transfer: plain memory pyverbs allocates
        self.bounce = MR(self.pd, bounce_size, e.IBV_ACCESS_LOCAL_WRITE)

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
            raise RegistrationError(exc.error_code) from None

    def _post(self, opcode: int, mr: MR, length: int) -> None:
        wr = SendWR(opcode=opcode, num_sge=1, sg=[SGE(self.bounce.buf, length, self.bounce.lkey)],
                    send_flags=e.IBV_SEND_SIGNALED)
        wr.set_wr_rdma(mr.rkey, mr.buf)
        self.a.post_send(wr)
        deadline = time.monotonic() + COMPLETION_TIMEOUT
        while time.monotonic() < deadline:
            n, wcs = self.cq.poll(1)
            if n:
                if wcs[0].status != e.IBV_WC_SUCCESS:
                    self.connect()
                    raise RuntimeError(f"RDMA {e.ibv_wr_opcode(opcode).name} completed with "
                                       f"{e.ibv_wc_status(wcs[0].status).name}")
                return
        self.connect()
        raise TimeoutError(f"no completion for RDMA {e.ibv_wr_opcode(opcode).name} "
                           f"within {COMPLETION_TIMEOUT} s")

    def rdma_read(self, mr: MR, length: int) -> bytes:
        """What the device reads from MR, as a remote peer would."""
        self._post(e.IBV_WR_RDMA_READ, mr, length)
        return self.bounce.read(length, 0)

    def rdma_write(self, mr: MR, data: bytes) -> None:
        """Have the device write DATA into MR, as a remote peer would."""
        self.bounce.write(data, len(data))
        self._post(e.IBV_WR_RDMA_WRITE, mr, len(data))

    def close(self) -> None:
        self.ctx.close()
