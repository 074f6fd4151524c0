"""Keep TensorFlow's native start-up log lines out of the examples' output.

Where TensorFlow is installed (``./scripts/test.sh`` puts it in the same ``.venv``),
Keras imports it even on the JAX backend (``keras.utils.set_random_seed`` seeds
``tf.random`` too), and TensorFlow's C++ libraries then log informational lines to
stderr (oneDNN, "Could not find cuda drivers", the CPU instruction set), each time
preceded by abseil's "All log messages before absl::InitializeLog() is called are
written to STDERR". Those come from abseil's logging before anything configured it,
so ``TF_CPP_MIN_LOG_LEVEL`` does not reach them (measured with TensorFlow 2.21: at 1,
2 or 3 they all still print), and ``TF_ENABLE_ONEDNN_OPTS=0`` would change
TensorFlow's numerics to silence one of them. So ``quiet_native_startup`` drops
exactly those lines, as they come, and passes every other line through unchanged:
native warnings (``W``) and errors (``E``), Python warnings and tracebacks.

This module imports neither Keras nor TensorFlow, so it can run before them.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

#: INFO lines of TensorFlow's native code (abseil's format ``I0000 00:00:... file.cc:N]``
#: and TensorFlow's older ``2025-01-01 00:00:00.0: I file.cc:N]``), abseil's warning that
#: logging is not configured yet, and the second line of cpu_feature_guard's message.
NOISE = re.compile(
    r"(I\d{4} [\d:.]+ +\d+ [\w/.-]+\.cc:\d+\] "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: I [\w/.-]+\.cc:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate "
    r"compiler flags\.)"
)


def quiet_environment() -> None:
    """TensorFlow's own INFO logging off, unless the user set ``TF_CPP_MIN_LOG_LEVEL``.

    Level 1 filters INFO only: TensorFlow's warnings and errors still print.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def is_noise(line: str) -> bool:
    return NOISE.match(line.rstrip("\r\n")) is not None


@contextlib.contextmanager
def quiet_native_startup() -> Iterator[None]:
    """Inside, lines written to stderr (file descriptor 2, native code included) that
    ``is_noise`` are dropped; the others reach stderr as they are written.

    Stderr is swapped for a pipe that a thread reads line by line, so nothing is
    held back until the block ends (a crash inside still shows what came before).
    """
    sys.stderr.flush()
    try:
        original = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                if not is_noise(raw.decode("utf-8", errors="replace")):
                    while raw:
                        raw = raw[os.write(original, raw) :]

    thread = threading.Thread(target=pump, name="quiet_native_startup", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the thread reads to EOF
        thread.join()
        os.close(original)
