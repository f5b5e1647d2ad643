import os
import socket

import pytest

# No model hub here or in CI: without this every hub lookup retries for ~20 s before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def free_port() -> int:
    """A TCP port free right now, for a 2-process launch's rendezvous: a fixed port clashes when two test
    runs share a machine, and the second launch's ranks then join the first one's store."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
