"""The command line: `python -m fastna {info,demo,profile,explain}` (`--help` on each)."""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

COMMANDS = {
    "info": "what this install holds: the compiled kernels (family, arch, ranks, dtypes, head "
            "dims, tiles), torch, the GPU, and the backends that can run here",
    "demo": "one 2D neighborhood attention on the best backend here, checked against dense "
            "attention with the neighborhood as a mask (an independent computation)",
    "profile": "time NA problems (presets or --shape) on every backend against dense SDPA and "
               "FlexAttention (`python -m fastna profile --help`)",
    "explain": "which backend, kernel and tile a call runs, and why not the others "
               "(`python -m fastna explain --help`)",
}


def _kernel_rows() -> list:
    from fastna import _ext
    return list(_ext.kernel_table())


def format_kernels(rows) -> list:
    """One line per (op, family, arch, tile): the ranks, dtypes and head dims compiled."""
    groups = {}
    for r in rows:
        key = (r["op"], r["family"], r["arch"], r["tile"])
        ranks, dtypes, dims = groups.setdefault(key, (set(), set(), set()))
        ranks.add(int(r["rank"]))
        dtypes.add(str(r["dtype"]))
        dims.add(int(r["head_dim"]))
    lines = []
    for (op, family, arch, tile), (ranks, dtypes, dims) in sorted(groups.items()):
        dims_txt = "any" if dims == {0} else "/".join(str(d) for d in sorted(dims))
        lines.append(f"  {op:<10} {family:<6} sm{arch:<4} tile {tile:<12} ranks "
                     f"{','.join(str(x) for x in sorted(ranks))}  dtypes {','.join(sorted(dtypes))}"
                     f"  head dims {dims_txt}")
    return lines


def _info() -> int:
    import fastna
    from fastna import _ext

    print(f"fastna {fastna.__version__}")
    info = _ext.build_info()
    if info is None:
        print(f"compiled module: missing ({_ext.load_error()}); pure-Python (reference) only")
    elif not info.get("cuda"):
        print(f"compiled module: host-only build (version {info.get('version')}): no CUDA "
              f"kernels")
    else:
        rows = _kernel_rows()
        print(f"compiled module: version {info.get('version')}, {len(rows)} kernel instances "
              f"(what the module holds, by op / family / arch / tile):")
        for line in format_kernels(rows):
            print(line)
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda})")
    if torch.cuda.is_available():
        dev = torch.cuda.current_device()
        cc = torch.cuda.get_device_capability(dev)
        print(f"CUDA available: yes, {torch.cuda.get_device_name(dev)} (sm_{cc[0]}{cc[1]})")
    else:
        print("CUDA available: no")
    print(f"backends available: {', '.join(fastna.available_backends())}")
    return 0


def neighborhood_mask_2d(shape, kernel) -> torch.Tensor:
    """[N, N] bool: query (i, j) sees key (y, x) -- written out from the definition of a
    stride-1, undilated, non-causal window (docs/SEMANTICS.md): on each axis the window of K
    positions centred on the query, shifted inwards at the borders."""
    def axis(length, k):
        start = (torch.arange(length) - k // 2).clamp(0, length - k)     # [L] window starts
        keys = torch.arange(length)
        return (keys[None, :] >= start[:, None]) & (keys[None, :] < start[:, None] + k)
    rows, cols = axis(shape[0], kernel), axis(shape[1], kernel)         # [H, H], [W, W]
    return (rows[:, None, :, None] & cols[None, :, None, :]).reshape(
        shape[0] * shape[1], shape[0] * shape[1])


def _demo() -> int:
    import fastna

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    shape, heads, dim = ((64, 64), 4, 64) if cuda else ((32, 32), 2, 32)
    dtype = torch.float16 if cuda else torch.float32
    kernel = 7
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, *shape, heads, dim, device=device, generator=g, dtype=dtype)
               for _ in range(3))
    backend = fastna.available_backends()[0]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    out = fastna.na2d(q, k, v, kernel, backend=backend)
    # The check: dense attention over all N keys in float64 (round-off of its own far below
    # the tolerance), with the neighborhood as a mask.
    mask = neighborhood_mask_2d(shape, kernel).to(device)
    flat = [t.double().reshape(1, -1, heads, dim).transpose(1, 2) for t in (q, k, v)]
    dense = torch.nn.functional.scaled_dot_product_attention(*flat, attn_mask=mask)
    dense = dense.transpose(1, 2).reshape(out.shape)
    err = ((out.double() - dense).norm() / dense.norm()).item()
    times = []
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        fastna.na2d(q, k, v, kernel, backend=backend)
        sync()
        times.append(time.perf_counter() - t0)
    print(f"na2d B=1 {shape[0]}x{shape[1]} heads={heads} dim={dim} kernel={kernel} {dtype} "
          f"on {device}, backend {backend!r}")
    print(f"checked against: dense float64 attention (torch SDPA) over all {shape[0] * shape[1]} "
          f"keys with the {kernel}x{kernel} neighborhood as a boolean mask")
    print(f"||out - dense|| / ||dense|| = {err:.3e}")
    print(f"median time over {len(times)} runs: {statistics.median(times) * 1e3:.3f} ms")
    tol = 1e-2 if dtype != torch.float32 else 1e-5
    if not err < tol:
        print(f"error above tolerance {tol}", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastna",
                                     description="fastna: neighborhood attention kernels.")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    for name, text in COMMANDS.items():
        sub.add_parser(name, help=text, description=text)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `profile` has its own option set; hand it everything after the command name.
    if argv and argv[0] == "profile":
        from fastna import profiler
        return profiler.main(argv[1:]) or 0
    if argv and argv[0] == "explain":
        from fastna import _explain_cli
        return _explain_cli.main(argv[1:])
    args = _parser().parse_args(argv)
    return {"info": _info, "demo": _demo}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
