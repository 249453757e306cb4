"""The `keras-advreg` process: its exit status and user errors, the Keras backend it needs,
and a quiet import of TensorFlow.

No TensorFlow at import time: parsing and `--help` stay fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator

PROG = "keras-advreg"
EXIT_USAGE = 2


class UserError(Exception):
    """An error in what the user asked for: reported in one line, without a traceback."""


def import_tensorflow(*, quiet: bool = True) -> None:
    """Imports TensorFlow and lists its devices; with `quiet`, without its start-up log.

    TensorFlow >= 2.19 writes its start-up lines (oneDNN, CUDA, CPU features) through
    absl before its log is initialized, whatever `TF_CPP_MIN_LOG_LEVEL` says
    (tensorflow/tensorflow#100442). With `quiet`, file descriptor 2 points at a
    temporary file while TensorFlow loads and finds its devices: the lines are
    dropped, or written to stderr after all when the import fails.
    """
    if "tensorflow" in sys.modules:
        return
    context = _native_stderr_captured() if quiet else contextlib.nullcontext()
    with context:
        import tensorflow as tf

        tf.config.list_physical_devices()


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[None]:
    """Sends what is written to file descriptor 2 to a temporary file; shows it on errors."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no usable stderr: nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                sys.stderr.flush()  # Python's own writes to fd 2 land in the file too
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace"))


def keras_backend() -> tuple[str, str]:
    """`(backend, source)`: the Keras backend, found as Keras finds it, without importing it.

    The source is what chose it (`KERAS_BACKEND=...`, the keras.json file, Keras'
    default), for the error message.
    """
    keras = sys.modules.get("keras")
    if keras is not None:  # imported already: its choice is made
        try:
            return keras.backend.backend(), "keras.backend.backend()"
        except AttributeError:  # a partly imported module
            pass
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return name, f"KERAS_BACKEND={name}"
    if "KERAS_HOME" in os.environ:
        keras_dir = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        keras_dir = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    config_path = os.path.expanduser(os.path.join(keras_dir, "keras.json"))
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, ValueError):
        config = {}
    name = config.get("backend") if isinstance(config, dict) else None
    if isinstance(name, str) and name:
        return name, f"backend={name!r} in {config_path}"
    return "tensorflow", "Keras' default"


def check_keras_backend(command: str) -> None:
    """Raises `UserError` unless Keras runs on TensorFlow (every command needs it)."""
    backend, source = keras_backend()
    if backend != "tensorflow":
        raise UserError(
            f"`{PROG} {command}` needs the TensorFlow backend of Keras 3; set "
            f"KERAS_BACKEND=tensorflow. Received: {source}"
        )
