"""MNIST for the applications: kept for imports of `keras_advreg.apps.mnist`; the loaders
live in `keras_advreg.data.datasets`, the home of the data sets."""

from keras_advreg.data.datasets import load_mnist_test, load_mnist_train

__all__ = ["load_mnist_test", "load_mnist_train"]
