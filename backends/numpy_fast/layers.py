"""The reference layers, forward and backward, CS231n style: `*_forward(x, ...) -> (out, cache)`,
`*_backward(dout, cache) -> gradients`. One module per idea; this one gathers them."""

from cvtool_backends.numpy_fast.activations import (
                                            relu6_backward,
                                            relu6_forward,
                                            relu_backward,
                                            relu_forward,
                                            sigmoid_backward,
                                            sigmoid_forward,
                                            tanh_backward,
                                            tanh_forward,
)
from cvtool_backends.numpy_fast.conv import (
                                            conv2d_backward,
                                            conv2d_forward,
                                            conv2d_relu,
                                            conv_transpose2d_backward,
                                            conv_transpose2d_forward,
)
from cvtool_backends.numpy_fast.loss import soft_dice, softmax_cross_entropy
from cvtool_backends.numpy_fast.norm import batchnorm2d_backward, batchnorm2d_forward
from cvtool_backends.numpy_fast.pool import (
                                            avg_pool2d_backward,
                                            avg_pool2d_forward,
                                            max_pool2d_backward,
                                            max_pool2d_forward,
)

__all__ = [
    "conv2d_forward", "conv2d_backward", "conv2d_relu", "conv_transpose2d_forward", "conv_transpose2d_backward",
    "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
    "relu_forward", "relu_backward", "relu6_forward", "relu6_backward", "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
    "batchnorm2d_forward", "batchnorm2d_backward", "softmax_cross_entropy", "soft_dice",
]
