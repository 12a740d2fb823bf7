"""Shared test setup: offline Hub, `tests/` importable, session-wide tiny models."""

import os
import sys

# Before anything imports huggingface_hub: it reads these once, at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

import tiny_models  # noqa: E402

# Weight save/load progress bars would otherwise flood the output of every fixture build.
hf_logging.disable_progress_bar()


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Nothing in the tests may open a network connection: any attempt fails the test that made it."""
    import socket

    real_connect = socket.socket.connect

    def refuse(sock, address):
        if sock.family == getattr(socket, "AF_UNIX", None):
            return real_connect(sock, address)
        raise RuntimeError(f"a test tried to open a network connection to {address!r}")

    socket.socket.connect = refuse
    try:
        yield
    finally:
        socket.socket.connect = real_connect


@pytest.fixture(scope="session")
def clip():
    return tiny_models.make_clip()


@pytest.fixture(scope="session")
def clip_vision_projection():
    return tiny_models.make_clip_vision_with_projection()


@pytest.fixture(scope="session")
def siglip():
    return tiny_models.make_siglip()


@pytest.fixture(scope="session")
def siglip2():
    return tiny_models.make_siglip2()


@pytest.fixture(scope="session")
def vit():
    return tiny_models.make_vit()


@pytest.fixture(scope="session")
def deit():
    return tiny_models.make_deit()


@pytest.fixture(scope="session")
def deit_teacher():
    return tiny_models.make_deit_with_teacher()


@pytest.fixture(scope="session")
def dinov2():
    return tiny_models.make_dinov2()
