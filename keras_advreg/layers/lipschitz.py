"""1-Lipschitz (in l2) drop-in layers: AOL-rescaled Dense and Conv2D, GroupSort, pooling.

Each layer here is 1-Lipschitz with respect to the l2 norm *by construction*: whatever its
weights, `||f(x) - f(x')||_2 <= ||x - x'||_2`. A model built only from such layers (and
other 1-Lipschitz pieces: `Flatten`, `ReLU`, non-overlapping `MaxPooling2D`, ...) has a
Lipschitz constant of at most 1, so its logit margin certifies an l2 ball around every
input (`keras_advreg.certify`).

The linear layers use AOL rescaling (Prach & Lampert, "Almost-Orthogonal Layers for
Efficient General-Purpose Lipschitz Networks", ECCV 2022): for a linear map `W` the
diagonal `D` with `D_ii = (sum_j |W^T W|_ij)^(-1/2)` makes `||W D||_2 <= 1` (a consequence
of the Gershgorin / Schur test on `D W^T W D`). It costs one Gram matrix per step (for a
convolution, the kernel correlated with itself), needs no iteration, and the bound is exact
rather than estimated: there is no power iteration whose error could make a certificate
unsound. Where the columns of `W` are orthogonal, `W D` is exactly orthonormal (the bound is
tight), and training drives the layers towards that.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

_EPSILON = 1e-12  # keeps an all-zero column finite (its scale then does not matter)


def aol_dense_scale(kernel: Any) -> Any:
    """The AOL scale of a Dense kernel (shape `(in, out)`): one factor per input unit.

    `x -> x @ (kernel * scale[:, None])` has l2 operator norm <= 1.
    """
    gram = ops.abs(ops.matmul(kernel, ops.transpose(kernel)))  # (in, in): |W^T W|
    return ops.rsqrt(ops.sum(gram, axis=1) + _EPSILON)


def aol_conv_scale(kernel: Any) -> Any:
    """The AOL scale of a Conv2D kernel (shape `(kh, kw, in, out)`): one factor per input
    channel.

    The convolution's `W^T W` is a convolution too, with the kernel correlated with itself
    over every relative shift: `P[s, i, j] = sum_{p, o} K[p, i, o] K[p + s, j, o]`, shape
    `(2kh-1, 2kw-1, in, in)`. Its absolute row sums bound the operator; the scale makes the
    stride-1 convolution over the whole plane 1-Lipschitz, hence also any zero-padded,
    cropped ('valid'/'same') or strided version of it (a restriction or subsampling).
    """
    kh, kw = kernel.shape[0], kernel.shape[1]
    # The kernel as a batch of `in` images of size (kh, kw) with `out` channels ...
    images = ops.transpose(kernel, (2, 0, 1, 3))
    images = ops.pad(images, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    # ... correlated with the kernel as a filter mapping `out` channels to `in` channels.
    filters = ops.transpose(kernel, (0, 1, 3, 2))
    gram = ops.conv(images, filters, strides=1, padding="valid", data_format="channels_last")
    return ops.rsqrt(ops.sum(ops.abs(gram), axis=(1, 2, 3)) + _EPSILON)


def _check_activation(layer_name: str, activation: Any) -> None:
    from keras_advreg.layers.activations import lipschitz_constant_of_activation

    fn = keras.activations.get(activation)
    constant = lipschitz_constant_of_activation(fn)
    if constant is None or constant > 1.0:
        raise ValueError(
            f"`{layer_name}` needs an activation that is 1-Lipschitz (None, 'linear', 'relu', "
            f"'tanh', 'sigmoid', ...) or a separate `GroupSort` layer. "
            f"Received: activation={activation!r}"
        )


@keras.saving.register_keras_serializable(package="keras_advreg")
class LipschitzDense(keras.layers.Dense):
    """A `keras.layers.Dense` that is 1-Lipschitz in l2 (AOL rescaling of its kernel).

    Takes the arguments of `keras.layers.Dense`; the kernel used is `kernel * scale` with the
    AOL scale (`aol_dense_scale`), so `||f(x) - f(x')||_2 <= ||x - x'||_2` for every weight
    value. The activation must itself be 1-Lipschitz (prefer `GroupSort` between layers:
    ReLU throws away half of the gradient norm).

    Example:

    >>> import numpy as np
    >>> from keras_advreg.layers import LipschitzDense
    >>> layer = LipschitzDense(4)
    >>> x = np.random.default_rng(0).normal(size=(2, 8)).astype("float32")
    >>> y = keras.ops.convert_to_numpy(layer(x))
    >>> bool(np.linalg.norm(y[0] - y[1]) <= np.linalg.norm(x[0] - x[1]) + 1e-5)
    True
    """

    def __init__(self, units: int, activation: Any = None, **kwargs):
        _check_activation("LipschitzDense", activation)
        super().__init__(units, activation=activation, **kwargs)

    @property
    def lipschitz_kernel(self) -> Any:
        """The kernel the layer applies: `kernel` rescaled by AOL (operator norm <= 1)."""
        kernel = ops.convert_to_tensor(self.kernel)
        return kernel * ops.expand_dims(aol_dense_scale(kernel), 1)

    def call(self, inputs, training=None):
        x = ops.matmul(inputs, self.lipschitz_kernel)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def quantize(self, *args, **kwargs):
        raise NotImplementedError(
            "`LipschitzDense` cannot be quantized (its bound would not hold)."
        )


@keras.saving.register_keras_serializable(package="keras_advreg")
class LipschitzConv2D(keras.layers.Conv2D):
    """A `keras.layers.Conv2D` that is 1-Lipschitz in l2 (AOL rescaling of its kernel).

    Takes the arguments of `keras.layers.Conv2D` ('valid' or 'same' padding, any strides,
    either data format); the kernel used is `kernel * scale` with one AOL factor per input
    channel (`aol_conv_scale`). `dilation_rate` and `groups` other than 1 are not supported.
    The activation must be 1-Lipschitz (prefer a `GroupSort` layer after it).

    Example:

    >>> import numpy as np
    >>> from keras_advreg.layers import LipschitzConv2D
    >>> layer = LipschitzConv2D(4, 3, padding="same")
    >>> x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype("float32")
    >>> y = keras.ops.convert_to_numpy(layer(x))
    >>> bool(np.linalg.norm(y[0] - y[1]) <= np.linalg.norm(x[0] - x[1]) + 1e-5)
    True
    """

    def __init__(self, filters: int, kernel_size: Any, activation: Any = None, **kwargs):
        _check_activation("LipschitzConv2D", activation)
        for name in ("dilation_rate", "groups"):
            value = kwargs.get(name, 1)
            if any(v != 1 for v in (value if isinstance(value, (tuple, list)) else (value,))):
                raise ValueError(
                    f"`LipschitzConv2D` supports {name}=1 only. Received: {name}={value!r}"
                )
        super().__init__(filters, kernel_size, activation=activation, **kwargs)

    @property
    def lipschitz_kernel(self) -> Any:
        """The kernel the layer applies: `kernel` rescaled by AOL (operator norm <= 1)."""
        kernel = ops.convert_to_tensor(self.kernel)
        return kernel * ops.reshape(aol_conv_scale(kernel), (1, 1, -1, 1))

    def convolution_op(self, inputs, kernel):
        kernel = kernel * ops.reshape(aol_conv_scale(kernel), (1, 1, -1, 1))
        return super().convolution_op(inputs, kernel)


def _pool_args(pool_size: Any, strides: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    def pair(v):
        return (int(v), int(v)) if isinstance(v, int) else tuple(int(a) for a in v)

    pool = pair(pool_size)
    stride = pool if strides is None else pair(strides)
    return pool, stride


@keras.saving.register_keras_serializable(package="keras_advreg")
class L2NormPooling2D(keras.layers.Layer):
    """l2-norm pooling: each output is the l2 norm of its (non-overlapping) window.

    1-Lipschitz in l2 when the windows do not overlap (`strides >= pool_size`, the default):
    `| ||a|| - ||b|| | <= ||a - b||` per window, and the windows partition the input. Like
    `keras.layers.MaxPooling2D`'s arguments; overlapping windows are refused (their
    constant is larger than 1). The gradient at an all-zero window is taken as zero.

    Example:

    >>> import numpy as np
    >>> from keras_advreg.layers import L2NormPooling2D
    >>> x = np.full((1, 2, 2, 1), 3.0, dtype="float32")
    >>> keras.ops.convert_to_numpy(L2NormPooling2D(2)(x)).ravel().tolist()
    [6.0]
    """

    def __init__(
        self,
        pool_size: Any = (2, 2),
        strides: Any = None,
        padding: str = "valid",
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.pool_size, self.strides = _pool_args(pool_size, strides)
        if any(s < p for s, p in zip(self.strides, self.pool_size)):
            raise ValueError(
                "`L2NormPooling2D` is 1-Lipschitz only with non-overlapping windows "
                f"(strides >= pool_size). Received: pool_size={self.pool_size}, strides={self.strides}"
            )
        self.padding = padding
        self.data_format = keras.config.image_data_format() if data_format is None else data_format
        if self.data_format not in ("channels_last", "channels_first"):
            raise ValueError(
                "`data_format` must be 'channels_last' or 'channels_first'. "
                f"Received: data_format={data_format!r}"
            )

    def call(self, inputs):
        squares = ops.average_pool(
            ops.square(inputs), self.pool_size, self.strides, self.padding, self.data_format
        )
        window = self.pool_size[0] * self.pool_size[1]
        total = squares * window
        # sqrt with a zero gradient at 0 (sqrt's gradient there is infinite).
        safe = ops.where(total > 0, total, ops.ones_like(total))
        return ops.where(total > 0, ops.sqrt(safe), ops.zeros_like(total))

    def compute_output_shape(self, input_shape):
        return keras.layers.AveragePooling2D(
            self.pool_size, self.strides, self.padding, self.data_format
        ).compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": self.pool_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
        }


@keras.saving.register_keras_serializable(package="keras_advreg")
class ScaledAveragePooling2D(keras.layers.AveragePooling2D):
    """Average pooling times `sqrt(window size)`: 1-Lipschitz in l2 and tight.

    A mean over `k` values has l2 norm `1/sqrt(k)` as a linear map; over non-overlapping
    windows (`strides >= pool_size`, the default) the pooled map has norm `1/sqrt(k)`, so the
    rescaled one has norm exactly 1 (a plain `AveragePooling2D` would lose a factor
    `sqrt(k)` of the certified radius). Only 'valid' padding: 'same' pads partial windows,
    whose average over fewer values has a larger constant. Arguments of
    `keras.layers.AveragePooling2D`.

    Example:

    >>> import numpy as np
    >>> from keras_advreg.layers import ScaledAveragePooling2D
    >>> x = np.full((1, 2, 2, 1), 3.0, dtype="float32")
    >>> keras.ops.convert_to_numpy(ScaledAveragePooling2D(2)(x)).ravel().tolist()
    [6.0]
    """

    def __init__(
        self, pool_size: Any = (2, 2), strides: Any = None, padding: str = "valid", **kwargs
    ):
        pool, stride = _pool_args(pool_size, strides)
        if any(s < p for s, p in zip(stride, pool)) or padding != "valid":
            raise ValueError(
                "`ScaledAveragePooling2D` is 1-Lipschitz only with non-overlapping windows "
                "(strides >= pool_size) and padding='valid'. "
                f"Received: pool_size={pool}, strides={stride}, padding={padding!r}"
            )
        super().__init__(pool_size=pool, strides=stride, padding=padding, **kwargs)

    def call(self, inputs):
        return super().call(inputs) * math.sqrt(self.pool_size[0] * self.pool_size[1])


__all__ = [
    "L2NormPooling2D",
    "LipschitzConv2D",
    "LipschitzDense",
    "ScaledAveragePooling2D",
    "aol_conv_scale",
    "aol_dense_scale",
]
