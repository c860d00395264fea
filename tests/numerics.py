"""What many tests share: the relative error they compare with, and random valid window
parameters for a shape."""


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
