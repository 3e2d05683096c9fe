"""The course's convolution worked example, computed with Stride's own layer.

Convolution flips the kernel: y[i, j] = sum_k sum_l x[i - k, j - l] w[k, l] (x is zero
outside the image; every output with a non-zero term: `full` padding). Frameworks,
torch and Stride's `Conv2d` included, compute cross-correlation instead,
y[i, j] = sum_k sum_l x[i + k, j + l] w[k, l]; the two agree when the layer holds the
flipped kernel W^r (w rotated by 180 degrees). A learned kernel is simply learned
flipped, so for training the difference does not matter; for a worked example it does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.layers import Conv2d

EXAMPLE_X = ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0), (7.0, 8.0, 9.0))
EXAMPLE_W = ((1.0, 2.0), (3.0, 4.0))  # not symmetric, so the flip shows

Matrix = tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class ConvExample:
    x: Matrix
    w: Matrix
    w_flipped: Matrix  # W^r: w rotated by 180 degrees
    by_definition: Matrix  # sum_k sum_l x[i - k, j - l] w[k, l], computed by loops
    conv2d_with_w: Matrix  # Stride's Conv2d holding w: cross-correlation
    conv2d_with_w_flipped: Matrix  # Stride's Conv2d holding W^r: the convolution

    @property
    def flip_matches(self) -> bool:
        return self.conv2d_with_w_flipped == self.by_definition

    @property
    def unflipped_differs(self) -> bool:
        return self.conv2d_with_w != self.by_definition


def convolve_by_definition(x: Matrix, w: Matrix) -> Matrix:
    """The textbook formula, full output ((n + m - 1) x (n + m - 1)), by plain loops."""
    n, m = len(x), len(w)
    size = n + m - 1
    out = [[0.0] * size for _ in range(size)]
    for i in range(size):
        for j in range(size):
            for k in range(m):
                for l_ in range(m):
                    a, b = i - k, j - l_
                    if 0 <= a < n and 0 <= b < n:
                        out[i][j] += x[a][b] * w[k][l_]
    return tuple(tuple(row) for row in out)


def stride_conv(x: Matrix, w: Matrix) -> Matrix:
    """x through Stride's Conv2d (one channel, `full` padding, no bias) holding w."""
    layer = Conv2d(1, 1, len(w), 1, "full")
    assert layer.bias is not None
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(w, dtype=torch.float32).view(1, 1, len(w), len(w)))
        layer.bias.zero_()
        y = layer(torch.tensor(x, dtype=torch.float32).view(1, 1, len(x), len(x)))  # (1, 1, H, W)
    return tuple(tuple(float(v) for v in row) for row in y[0, 0].tolist())


def worked_example(x: Matrix = EXAMPLE_X, w: Matrix = EXAMPLE_W) -> ConvExample:
    flipped = tuple(tuple(reversed(row)) for row in reversed(w))
    return ConvExample(
        x=x,
        w=w,
        w_flipped=flipped,
        by_definition=convolve_by_definition(x, w),
        conv2d_with_w=stride_conv(x, w),
        conv2d_with_w_flipped=stride_conv(x, flipped),
    )


def _matrix(m: Matrix) -> str:
    return "<br>".join(" ".join(f"{v:g}" for v in row) for row in m)


def format_markdown(ex: ConvExample) -> str:
    """The table docs/course.md includes, and a line on what it shows."""
    rows = [
        ("x (input)", _matrix(ex.x)),
        ("w (kernel)", _matrix(ex.w)),
        ("W^r (w rotated 180 degrees)", _matrix(ex.w_flipped)),
        ("y = sum_k,l x[i-k, j-l] w[k, l] (definition, loops)", _matrix(ex.by_definition)),
        ("Stride Conv2d holding w (cross-correlation)", _matrix(ex.conv2d_with_w)),
        ("Stride Conv2d holding W^r", _matrix(ex.conv2d_with_w_flipped)),
    ]
    table = "| | values (rows) |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)
    verdict = (
        f"Conv2d holding W^r equals the definition: {'yes' if ex.flip_matches else 'NO'}; "
        f"Conv2d holding w differs from it: {'yes' if ex.unflipped_differs else 'NO'}."
    )
    return f"{table}\n{verdict}\n"
