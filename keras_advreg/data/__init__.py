"""Data in the shapes users have: `(x, y[, w])` tuples, feature dicts, tf.data, tfds."""

from keras_advreg.data.adapters import to_dict, to_tuple, unpack_batch
from keras_advreg.data.semi_supervised import semi_supervised_batches
from keras_advreg.data.tfds import load_tfds

__all__ = ["load_tfds", "semi_supervised_batches", "to_dict", "to_tuple", "unpack_batch"]
