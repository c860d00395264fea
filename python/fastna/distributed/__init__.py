"""Context parallelism: one neighborhood attention over the ranks of a torch.distributed group,
each holding a contiguous slab of one spatial axis (docs/GUIDE.md, "Python: context
parallelism").

    import fastna.distributed as fd
    q, k, v = (fd.shard(t, shard_axis=0) for t in (q_full, k_full, v_full))   # or your own slabs
    out = fd.neighborhood_attention(q, k, v, kernel_size, stride=1, dilation=1, is_causal=False,
                                    scale=None, shard_axis=0, group=None, mode="halo",
                                    backend=None)                               # this rank's slab
    out_full = fd.gather(out, shard_axis=0)

Modes: "halo" (exactly the key / value rows each rank's windows need, point to point,
overlapped with the interior queries; fastna.distributed._halo) and "ulysses" (all-to-all to
head-sharded full tensors around fastna.neighborhood_attention; fastna.distributed._ulysses).
The halo mode's local compute is the offset-slab contract of fastna.distributed._slab:
"embedded" (fastna's own kernels on an ordinary problem that reproduces the global windows;
fastna.distributed._slab_embed, the default on CUDA) or its pure-PyTorch "reference" (the
default on the CPU); local_compute_path(...) says which runs where.
"""
from . import _slab_embed  # noqa: F401  (registers the "embedded" slab implementation)
from ._api import MODES, neighborhood_attention
from ._comm import Traffic, count_traffic
from ._path import local_compute_path
from ._plan import AxisPlan, axis_plan, even_lengths
from ._shard import gather, shard
from ._slab import register as register_slab_backend
from ._slab import slab_attention, slab_backends

__all__ = ["neighborhood_attention", "shard", "gather", "MODES", "slab_attention",
           "slab_backends", "register_slab_backend", "count_traffic", "Traffic", "axis_plan",
           "AxisPlan", "even_lengths", "local_compute_path"]
