"""`python -m fastna info` (what this install can do), `demo` (a 2D NA), `profile` (timings)
and `explain` (which kernel and tile a call runs, and why)."""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def _info() -> int:
    import fastna
    from fastna import _ext

    print(f"fastna {fastna.__version__}")
    info = _ext.build_info()
    if info is None:
        print(f"compiled module: missing ({_ext.load_error()}); pure-Python (reference) only")
    elif not info.get("cuda"):
        print(f"compiled module: host-only build (version {info.get('version')})")
    else:
        print(f"compiled module: version {info.get('version')}")
        for key in ("archs", "ranks", "dtypes", "kernels"):
            print(f"  {key}: {', '.join(str(x) for x in info.get(key, []))}")
        print(f"  instances: {len(info.get('instances', []))}")
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda})")
    if torch.cuda.is_available():
        dev = torch.cuda.current_device()
        cc = torch.cuda.get_device_capability(dev)
        print(f"CUDA available: yes, {torch.cuda.get_device_name(dev)} (sm_{cc[0]}{cc[1]})")
    else:
        print("CUDA available: no")
    print(f"backends available: {', '.join(fastna.available_backends())}")
    return 0


def _demo() -> int:
    import fastna
    from fastna import _args, backends, reference

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    shape, heads, dim = ((64, 64), 4, 64) if cuda else ((32, 32), 2, 32)
    dtype = torch.float16 if cuda else torch.float32
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, *shape, heads, dim, device=device, generator=g, dtype=dtype)
               for _ in range(3))
    kernel = 7
    params = _args.normalize(q, k, v, kernel)
    backend = backends.select(None, q, k, v, params).name

    def sync():
        if cuda:
            torch.cuda.synchronize()

    out = fastna.na2d(q, k, v, kernel, backend=backend)
    ref = reference.attention(q.float(), k.float(), v.float(), params)
    err = ((out.float() - ref).norm() / ref.norm()).item()
    times = []
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        fastna.na2d(q, k, v, kernel, backend=backend)
        sync()
        times.append(time.perf_counter() - t0)
    print(f"na2d B=1 {shape[0]}x{shape[1]} heads={heads} dim={dim} kernel={kernel} {dtype} "
          f"on {device}")
    print(f"backend: {backend}")
    print(f"||out - ref|| / ||ref|| = {err:.3e}")
    print(f"median time over {len(times)} runs: {statistics.median(times) * 1e3:.3f} ms")
    tol = 1e-2 if dtype != torch.float32 else 1e-4
    if not err < tol:
        print(f"error above tolerance {tol}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `profile` has its own option set; hand it everything after the command name.
    if argv and argv[0] == "profile":
        from fastna import profiler
        return profiler.main(argv[1:]) or 0
    if argv and argv[0] == "explain":
        from fastna import _explain_cli
        return _explain_cli.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m fastna",
                                     epilog="`python -m fastna profile --help` for the profiler, "
                                            "`python -m fastna explain --help` for explain")
    parser.add_argument("command", choices=["info", "demo", "profile", "explain"])
    args = parser.parse_args(argv)
    return _info() if args.command == "info" else _demo()


if __name__ == "__main__":
    sys.exit(main())
