"""bar.parallel.init: what a worker prints when it starts."""

import subprocess
import sys

WORKER = """
import warnings
from bar import parallel
from bar.model import build
from bar.specs import ModelSpec

parallel.init(1, 0)
arch = ModelSpec(num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2, ffn_hidden_size=176,
                 vocab_size=512, seq_length=128)
build(arch, 1, num_experts=2)
build(arch, 1)
warnings.warn("a warning of another kind")
parallel.shutdown()
"""


def test_a_worker_prints_no_megatron_notices_and_other_warnings_still_show():
    """Megatron-Core's fallback notices (no Transformer Engine, no Apex) and its deprecation of its own
    cuda_graph_scope default are filtered by message: 7 warnings of every training stage, and only those."""
    out = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    warnings = [line for line in out.stderr.splitlines() if "Warning:" in line]
    assert warnings == ["<string>:12: UserWarning: a warning of another kind"], out.stderr
