"""One device per rank: no tensor of the training or decoding code is created without it.

A GPU run cannot be tried on this machine, so the rule is checked on the source: every call of
a torch tensor constructor in the modules that train, decode or score names its `device`,
except in the functions listed below, which build host-side tensors on purpose (each says why).
Constructors `*_like` and methods of an existing tensor (`new_zeros`) follow their tensor.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    "bar/train",
    "bar/decode.py",
    "bar/scoring.py",
    "bar/router.py",
    "bar/runner.py",
    "bar/model",
    "bar/parallel",
    "bar/stages",
]
CONSTRUCTORS = {
    "zeros",
    "ones",
    "full",
    "empty",
    "tensor",
    "arange",
    "eye",
    "rand",
    "randn",
    "randint",
    "linspace",
    "as_tensor",
}
HOST_SIDE = {
    ("bar/train/batches.py", "get"): "a batch is built on the host; the training loop moves it to the device",
    ("bar/model/__init__.py", "with_added_tokens"): "works on a state dict (host tensors) before it is loaded",
    ("bar/model/moe.py", "upcycle"): "works on state dicts (host tensors) before they are loaded",
}


def constructor_calls(path: Path):
    """(function, line, constructor) of each torch constructor call without a device."""
    tree = ast.parse(path.read_text())
    for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        for call in ast.walk(func):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Name)
                and call.func.value.id == "torch"
                and call.func.attr in CONSTRUCTORS
                and not any(k.arg == "device" for k in call.keywords)
            ):
                yield func.name, call.lineno, call.func.attr


def test_every_tensor_constructor_of_training_and_decoding_names_its_device():
    files = [p for m in MODULES for p in ((ROOT / m).rglob("*.py") if (ROOT / m).is_dir() else [ROOT / m])]
    assert len(files) > 10
    missing = []
    for path in files:
        rel = str(path.relative_to(ROOT))
        for func, line, name in constructor_calls(path):
            if (rel, func) not in HOST_SIDE:
                missing.append(f"{rel}:{line} torch.{name}(...) in {func}() has no device=")
    assert not missing, "\n".join(missing)


def test_the_rule_finds_a_constructor_without_a_device(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import torch\ndef f(n):\n    a = torch.zeros(n, device=d)\n    return torch.ones(n)\n")
    assert list(constructor_calls(source)) == [("f", 4, "ones")]
