"""What one forward pass costs in memory, from the spec's channel counts, and what the machine has free.

Inference keeps few tensors alive at once: a node's output lives until its last consumer has run, and the
encoder's outputs live on as skips until the decoder concatenates them. `peak_bytes_per_pixel` walks the graph
in order with that rule and adds the largest convolution's lowered input (im2col: Cin * k * k values a pixel,
what a GEMM-based backend builds), so the figure is an upper bound for every backend, not a guess at one.
Every tensor of a U-Net is a whole number of input pixels' worth (level l has 1/4**l of them), so the cost is
linear in the pixels of a pass: bytes = pixels * peak_bytes_per_pixel(spec).

    per_px = peak_bytes_per_pixel(spec)                     # default net (width 16, depth 3): see the tests
    pixels = pass_pixels(spec, free_bytes=None)             # None: this host's available memory
"""

from __future__ import annotations

from cvtool.model.spec import Conv2d, ConvTranspose2d, ModelSpec, trace

FLOAT = 4  # bytes: inference runs in float32
MEMORY_SHARE = 0.5  # of the free memory one pass may take: the image's own arrays, the blend and other processes
#                     need the rest


def peak_bytes_per_pixel(spec: ModelSpec) -> float:
    """Upper bound of the bytes alive during one forward pass, per input pixel (float32, batch 1), with what
    test-time augmentation keeps beside it (the flipped input, the running sum and the current output of the
    logits: cvtool.model.inference.with_tta), so that the layout does not depend on the augmentation."""
    m = spec.multiple
    rows = trace(spec, (m, m))  # level l: (m / 2**l)**2 of the m*m pixels, so every count is exact
    px = float(m * m)
    size = {"input": spec.in_channels * px}
    size.update({r.name: r.out_shape[0] * r.out_shape[1] * r.out_shape[2] for r in rows})
    last_use: dict[str, int] = {}
    graph = spec.graph()
    for i, n in enumerate(graph):
        for src in n.inputs:
            last_use[src] = i
    live = size["input"]
    peak = live
    for i, n in enumerate(graph):
        work = 0.0
        if isinstance(n.layer, Conv2d) and n.layer.kernel_size > 1:  # im2col of its input: k*k copies
            work = n.layer.kernel_size**2 * size[n.inputs[0]]
        elif isinstance(n.layer, ConvTranspose2d):  # the GEMM's (Cout * k * k, h * w) before col2im
            work = size[n.name]
        live += size[n.name]
        peak = max(peak, live + work)
        for src in set(n.inputs):
            if last_use.get(src) == i:
                live -= size[src]
    extra = spec.in_channels * px + 2 * spec.num_classes * px
    return FLOAT * (peak + extra) / px


def host_available_bytes() -> int | None:
    """Memory this process can still take on this host (cvtool.footprint.available_bytes: MemAvailable, lowered to a
    cgroup's room); None where neither can be read."""
    from cvtool.footprint import available_bytes

    return available_bytes()


FALLBACK_BYTES = 2 << 30  # where nothing says what is free: assume 2 GiB


def pass_pixels(spec: ModelSpec, free_bytes: int | None = None) -> int:
    """The most input pixels one forward pass may hold: MEMORY_SHARE of the free memory (free_bytes: a backend's
    device memory, e.g. a GPU's; None: this host's) over the pass's peak bytes per pixel."""
    free = free_bytes if free_bytes is not None else host_available_bytes()
    free = FALLBACK_BYTES if free is None else free
    return int(MEMORY_SHARE * free / peak_bytes_per_pixel(spec))
