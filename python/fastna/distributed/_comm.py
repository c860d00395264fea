"""Every torch.distributed call of fastna.distributed: the group, the exchange of slab lengths
and argument signatures, point-to-point row transfers (batch_isend_irecv) and the uneven
all-to-all; plus the traffic counter benchmarks read.

Tensors travel on their own device: CUDA tensors need a group with NCCL, CPU tensors one with
gloo.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

__all__ = ["Group", "resolve_group", "all_gather_vectors", "p2p", "all_to_all_flat",
           "all_gather_flat", "all_reduce_sum",
           "Traffic", "count_traffic"]


@dataclass(frozen=True)
class Group:
    handle: Optional[object]     # the ProcessGroup (None: the default group)
    rank: int                    # this process' rank inside it
    size: int
    global_ranks: Tuple[int, ...]

    def peer(self, r: int) -> int:
        return self.global_ranks[r]


def resolve_group(group) -> Group:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("fastna.distributed needs an initialized torch.distributed process "
                           "group: call torch.distributed.init_process_group first (group=None "
                           "means the default group)")
    if group is not None and not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"group must be a torch.distributed ProcessGroup or None, got "
                        f"{type(group).__name__}")
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError(f"this process (global rank {dist.get_rank()}) is not a member of "
                         f"group {group!r}")
    size = dist.get_world_size(group)
    handle = group if group is not None else dist.group.WORLD
    ranks = tuple(dist.get_global_rank(handle, r) for r in range(size))
    return Group(group, rank, size, ranks)


@dataclass
class Traffic:
    """Bytes this process sent and received through fastna.distributed while counting."""
    sent: int = 0
    received: int = 0
    messages: int = 0
    by_kind: dict = field(default_factory=dict)

    def add(self, kind: str, sent: int, received: int, messages: int) -> None:
        self.sent += sent
        self.received += received
        self.messages += messages
        s, r = self.by_kind.get(kind, (0, 0))
        self.by_kind[kind] = (s + sent, r + received)


_counters: List[Traffic] = []


@contextlib.contextmanager
def count_traffic():
    """with count_traffic() as t: ...  -> t.sent / t.received bytes of this process."""
    t = Traffic()
    _counters.append(t)
    try:
        yield t
    finally:
        _counters.remove(t)


def _count(kind: str, sent: int, received: int, messages: int) -> None:
    for t in _counters:
        t.add(kind, sent, received, messages)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


# torch 2.13 renamed all_gather_into_tensor (the old name warns)
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def all_gather_vectors(vector: Sequence[float], device, group: Group) -> List[List[float]]:
    """Every rank's float64 vector (all the same length), in rank order."""
    mine = torch.tensor(list(vector), dtype=torch.float64, device=device)
    if group.size == 1:
        return [mine.tolist()]
    out = torch.empty(group.size * mine.numel(), dtype=torch.float64, device=device)
    _all_gather(out, mine, group=group.handle)
    _count("metadata", _nbytes(mine) * (group.size - 1), _nbytes(mine) * (group.size - 1),
           2 * (group.size - 1))
    return out.reshape(group.size, -1).tolist()


class _Pending:
    def __init__(self, works):
        self.works = works

    def wait(self) -> None:
        for w in self.works:
            w.wait()
        self.works = []


Message = Tuple[int, torch.Tensor, int]     # (peer rank in the group, contiguous tensor, tag)


def p2p(sends: Sequence[Message], recvs: Sequence[Message], group: Group, kind: str) -> _Pending:
    """Post the sends and receives as one batch; wait() on the result completes them. Between a
    pair, at most one message per tag, posted in the same order at both ends (NCCL matches by
    order, gloo by tag); empty tensors are skipped (both ends know their sizes)."""
    ops = [dist.P2POp(dist.isend, t, group.peer(peer), group.handle, tag)
           for peer, t, tag in sends if t.numel()]
    ops += [dist.P2POp(dist.irecv, t, group.peer(peer), group.handle, tag)
            for peer, t, tag in recvs if t.numel()]
    if not ops:
        return _Pending([])
    _count(kind, sum(_nbytes(t) for _, t, _ in sends), sum(_nbytes(t) for _, t, _ in recvs),
           len(ops))
    return _Pending(dist.batch_isend_irecv(ops))


def all_to_all_flat(send: torch.Tensor, send_counts: Sequence[int], recv_counts: Sequence[int],
                    group: Group, kind: str) -> torch.Tensor:
    """Uneven all-to-all of a 1D tensor: send_counts[r] elements go to rank r, recv_counts[r]
    come from it (in rank order)."""
    out = send.new_empty(sum(recv_counts))
    if group.size == 1:
        out.copy_(send)
        return out
    dist.all_to_all_single(out, send, list(recv_counts), list(send_counts), group=group.handle)
    me = group.rank
    elem = send.element_size()
    _count(kind, (sum(send_counts) - send_counts[me]) * elem,
           (sum(recv_counts) - recv_counts[me]) * elem, 2 * (group.size - 1))
    return out


def all_gather_flat(t: torch.Tensor, group: Group, kind: str) -> torch.Tensor:
    """[size * t.numel()]: every rank's t (all the same shape), flattened, in rank order."""
    flat = t.contiguous().reshape(-1)
    if group.size == 1:
        return flat.clone()
    out = flat.new_empty(group.size * flat.numel())
    _all_gather(out, flat, group=group.handle)
    _count(kind, _nbytes(flat) * (group.size - 1), _nbytes(flat) * (group.size - 1),
           2 * (group.size - 1))
    return out


def all_reduce_sum(t: torch.Tensor, group: Group, kind: str) -> torch.Tensor:
    out = t.contiguous().clone()
    if group.size > 1:
        dist.all_reduce(out, group=group.handle)
        # a ring all-reduce moves about 2 (P - 1) / P of the tensor each way
        moved = 2 * (group.size - 1) * _nbytes(out) // group.size
        _count(kind, moved, moved, 2 * (group.size - 1))
    return out
