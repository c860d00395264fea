"""What many tests share: the relative error they compare with, random valid window
parameters for a shape, and random q / k / v (+ extra tokens)."""


def rel_error(a, b) -> float:
    """||a - b|| / ||b|| in float64 (b == 0: the absolute error)."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def random_window_params(rng, shape):
    """A random valid (kernel, stride, dilation, causal) per axis for `shape` (rng: a
    random.Random)."""
    kernel, stride, dilation, causal = [], [], [], []
    for L in shape:
        d = rng.randint(1, max(1, L // 2))
        k = rng.randint(2, max(2, L // d))
        kernel.append(k)
        dilation.append(d)
        stride.append(rng.randint(1, k))
        causal.append(rng.random() < 0.5)
    return tuple(kernel), tuple(stride), tuple(dilation), tuple(causal)


def random_inputs(shape, H, Hkv, D, Dv, E=0, dtype=None, seed=0, B=2):
    """q [B, *shape, H, D], k [B, *shape, Hkv, D], v [B, *shape, Hkv, Dv] and, with E > 0, extra
    keys / values [B, E, Hkv, D / Dv] (else None): float64 draws cast to dtype (default float64)."""
    import torch
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).to(dtype or torch.float64)

    q, k, v = r(B, *shape, H, D), r(B, *shape, Hkv, D), r(B, *shape, Hkv, Dv)
    ek = r(B, E, Hkv, D) if E else None
    ev = r(B, E, Hkv, Dv) if E else None
    return q, k, v, ek, ev
