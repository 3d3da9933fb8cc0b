"""What the benchmark scripts (and docs/prefect_ui.py) share: the model of a preset, a `transformers`
model of the same shape, a timer, and a throw-away Prefect server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def model_spec(preset: str):
    """The model of `preset` (specs/model.yaml with the preset's model section over it)."""
    import yaml

    from bar.specs import Specs

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "specs").symlink_to(ROOT / "specs")
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump({"preset": preset, "seed": 0, "experts": []}))
        return Specs(tmp).model


def llama(arch):
    """A randomly initialised `transformers` Llama of the same shape as `arch` (SDPA attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.ffn_hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_query_groups,
        head_dim=arch.head_dim,
        max_position_embeddings=arch.seq_length + 64,
        rms_norm_eps=arch.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": arch.rope_base},
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
        pad_token_id=0,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)


def seconds(fn) -> float:
    """Wall seconds of `fn()`, waiting for the GPU's queued work when there is a GPU."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


@contextmanager
def prefect_server(seconds: float = 180):
    """`prefect server start` on a free port of 127.0.0.1 with a throw-away database (its own
    PREFECT_HOME); yields (its API URL, the environment that reaches it) once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    with tempfile.TemporaryDirectory() as home:
        env = os.environ | {
            "PREFECT_HOME": home,
            "PREFECT_API_URL": api,
            "PREFECT_UI_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.time() + seconds
            while True:
                try:
                    urllib.request.urlopen(f"{api}/health", timeout=2)
                    break
                except OSError:
                    if server.poll() is not None or time.time() > deadline:
                        raise SystemExit(
                            f"prefect server start did not answer {api}/health within {seconds:.0f} s"
                        ) from None
                    time.sleep(1)
            yield api, env
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
