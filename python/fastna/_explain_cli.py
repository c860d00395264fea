"""`python -m fastna explain`: which kernel and tile a call would run, and why not the others
(fastna.explain on empty tensors of the given shape; nothing runs)."""
from __future__ import annotations

import argparse

import torch


def _ints(text):
    return tuple(int(x) for x in text.split(","))


def _bools(text):
    words = {"1": True, "true": True, "0": False, "false": False}
    return tuple(words[x.strip().lower()] for x in text.split(","))


def _one(values):
    return values[0] if len(values) == 1 else values


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastna explain",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=_ints, required=True,
                    help="query shape B,*spatial,H,D, e.g. 2,56,56,4,32")
    ap.add_argument("--kernel-size", type=_ints, required=True, help="e.g. 7 or 7,7")
    ap.add_argument("--stride", type=_ints, default=(1,))
    ap.add_argument("--dilation", type=_ints, default=(1,))
    ap.add_argument("--causal", type=_bools, default=(False,), help="e.g. false or true,false")
    ap.add_argument("--heads-kv", type=int, default=None, help="H_kv (default: H)")
    ap.add_argument("--dim-v", type=int, default=None, help="Dv (default: D)")
    ap.add_argument("--extra-tokens", type=int, default=0, help="additional KV tokens")
    ap.add_argument("--dtype", default="bfloat16", choices=["float16", "bfloat16", "float32",
                                                             "float64"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--grad", action="store_true", help="inputs that require grad")
    ap.add_argument("--backend", default=None)
    a = ap.parse_args(argv)
    import fastna

    shape, dtype = a.shape, getattr(torch, a.dtype)
    B, H, D = shape[0], shape[-2], shape[-1]
    Hkv = a.heads_kv or H
    Dv = a.dim_v or D

    def t(*s):
        return torch.empty(*s, dtype=dtype, device=a.device).requires_grad_(a.grad)

    q, k, v = t(*shape), t(*shape[:-2], Hkv, D), t(*shape[:-2], Hkv, Dv)
    ek = t(B, a.extra_tokens, Hkv, D) if a.extra_tokens else None
    ev = t(B, a.extra_tokens, Hkv, Dv) if a.extra_tokens else None
    print(fastna.explain(q, k, v, _one(a.kernel_size), _one(a.stride), _one(a.dilation),
                         _one(a.causal), additional_keys=ek, additional_values=ev,
                         backend=a.backend))
    return 0
