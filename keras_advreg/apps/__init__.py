"""Applications built on the library: the `keras-advreg` command line and the tutorial demo.

Nothing in the library imports from here.
"""
