"""Every reach into private Keras or NSL code, in one folder.

- `nsl`: the only import of Neural Structured Learning (with the `tf.estimator` shim).
- `nsl_private`: NSL's underscored `_GenAdvNeighbor` methods (random-start neighbours).
- `keras_internals`: Keras' private names (`keras.src`, graph history, loss tracker).

When a Keras or NSL release breaks keras_advreg, the break is here.
"""
