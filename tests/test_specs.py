"""Every shipped spec validates; bad specs fail with one line naming file, key, value and fix."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bar.specs import SPEC_FILES, SpecError, Specs
from conftest import ROOT, edit_yaml, set_params

PRESETS = sorted(p.stem for p in (ROOT / "specs" / "presets").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_spec_validates(preset, tmp_path):
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    shutil.copy(ROOT / "params.yaml", tmp_path)
    set_params(tmp_path, preset=preset)
    specs = Specs(tmp_path)
    specs.validate_all()
    for section in ("pretrain", "anchor"):
        assert getattr(specs.train, section).steps > 0


def test_tiny_preset_is_smaller():
    default = Specs(ROOT)
    assert default.params.preset in PRESETS
    assert set(SPEC_FILES) == {
        "model",
        "tokenizer",
        "data",
        "train",
        "eval",
        "merge",
        "router",
        "promotion",
        "baselines",
    }


@pytest.fixture
def specs_copy(tmp_path) -> Path:
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    shutil.copy(ROOT / "params.yaml", tmp_path)
    set_params(tmp_path, preset="default")
    return tmp_path


BAD = [
    # file, key, value, expected fragments of the message
    ("train", "anchor.optim.lr", -1, ["train.yaml", "anchor.optim.lr", "-1", "greater than 0"]),
    ("train", "anchor.optim.lrr", 1, ["train.yaml", "anchor.optim.lrr", "unknown key", "lr, min_lr"]),
    ("train", "pretrain.steps", "many", ["train.yaml", "pretrain.steps", '"many"', "integer"]),
    ("train", "pretrain.tp_size", 3, ["train.yaml", "pretrain.tp_size = 3", "allowed tp_size: [1, 2]"]),
    ("model", "num_query_groups", 3, ["model.yaml", "num_query_groups=3 must divide"]),
    ("model", "hidden_size", -8, ["model.yaml", "hidden_size", "-8", "greater than 0"]),
    (
        "data",
        "domains.maths",
        {"eval": 3},
        ["data.yaml", "domains.maths.eval = 3", "built in: general, math", "give files.eval: data/<file>"],
    ),
    ("data", "domains.Legal", {"eval": 3}, ["data.yaml", "domains.Legal", "should match pattern"]),
    ("data", "domains.math.eval", 0, ["data.yaml", "domains.math: no held-out prompts"]),
    (
        "experts/math",
        "domain",
        "legal",
        ["experts/math.yaml", "domain = 'legal'", "not a domain of", "domains: general, math"],
    ),
    ("data", "domains.math.sft", -5, ["data.yaml", "domains.math.sft", "-5", "greater than or equal to 0"]),
    (
        "data",
        "domains.math.files",
        {"sft": "/srv/math.jsonl"},
        ["data.yaml", "domains.math.files.sft = '/srv/math.jsonl'", "must be under data/", "dvc add"],
    ),
    ("data", "domains.math.files", {"sft": "data/../math.jsonl"}, ["domains.math.files.sft", "must be under data/"]),
    ("data", "domains.math.files", {"sft": "data/math.jsonl"}, ["domains.math.files.sft", "no such file"]),
    ("eval", "batch", 3, ["eval.yaml", "batch", "unknown key", "max_new_tokens"]),
    ("eval", "harness.tasks", ["bar_math", "mmlu --limit 5"], ["eval.yaml", "harness.tasks.1", "should match pattern"]),
    ("eval", "harness.include", ["/srv/tasks"], ["eval.yaml", "harness.include.0", "data/harness/"]),
    ("eval", "harness.include", ["data/harness/../x"], ["eval.yaml", "harness.include.0", "should match pattern"]),
    ("eval", "harness.limit", 5, ["eval.yaml", "harness.limit", "unknown key", "tasks, include"]),
    ("experts/math", "tp_size", 3, ["experts/math.yaml", "tp_size = 3", "allowed tp_size: [1, 2]"]),
    ("experts/math", "dp_size", 3, ["experts/math.yaml", "phases.midtrain: batch_size = 16", "dp_size = 3"]),
    (
        "experts/math",
        "phases.rlvr.micro_batch_size",
        48,
        ["experts/math.yaml", "micro_batch_size = 48", "prompts_per_step / dp_size x group_size = 128"],
    ),
    ("router", "micro_batch_size", 5, ["router.yaml", "micro_batch_size = 5", "batch_size / dp_size = 16"]),
    (
        "experts/math",
        "phases.sft.trainable",
        ["domain_ffn", "all"],
        ["experts/math.yaml", "phases.sft.trainable.1", '"all"', "'domain_ffn', 'router'"],
    ),
    (
        "experts/math",
        "phases.midtrain.lr_scale",
        {"lm_head": 0.1},
        ["experts/math.yaml", "phases.midtrain", "lr_scale names groups that do not train here: ['lm_head']"],
    ),
    (
        "experts/math",
        "phases.sft.lr_scale",
        {"embeddings": 0},
        ["experts/math.yaml", "phases.sft", "lr_scale values must be > 0"],
    ),
    ("experts/math", "phases.dpo", {"steps": 3}, ["experts/math.yaml", "phases.dpo", "midtrain, sft, rlvr"]),
    ("experts/code", "name", "kode", ["experts/code.yaml", "name = 'kode'", "'code'"]),
    ("merge", "strategy", "median", ["merge.yaml", "strategy", '"median"', "'mean', 'weighted_mean'"]),
    ("router", "sample_fraction", 1.5, ["router.yaml", "sample_fraction", "1.5", "less than or equal to 1"]),
    ("upgrades/code.v2", "version", 3, ["upgrades/code.v2.yaml", "version = 3", "must be 2"]),
    ("upgrades/code.v2", "phases.rlvr.steps", 0, ["upgrades/code.v2.yaml", "phases.rlvr.steps", "greater than 0"]),
    ("baselines", "sequential_order", ["math", "poetry"], ["baselines.yaml", "['poetry']", "known: ['math'"]),
    ("baselines", "sequential_order", [], ["baselines.yaml", "sequential_order", "at least 1 item"]),
    (
        "baselines",
        "dp_size",
        3,
        ["baselines.yaml: dp_size = 3", "experts/math.yaml", "phases.midtrain: batch_size = 16", "dp_size = 3"],
    ),
]


@pytest.mark.parametrize("name,key,value,expected", BAD, ids=[b[1] for b in BAD])
def test_bad_spec_one_clear_line(specs_copy, name, key, value, expected):
    edit_yaml(specs_copy / "specs" / f"{name}.yaml", key, value)
    with pytest.raises(SpecError) as err:
        specs = Specs(specs_copy)
        specs.validate_all()
        specs.train
    msg = str(err.value)
    assert "\n" not in msg
    for fragment in expected:
        assert fragment in msg, (fragment, msg)


@pytest.mark.parametrize(
    "baselines,expected",
    [
        (["monolithic", "mono"], "'mono' is neither monolithic nor sequential nor an expert spec"),
        (["code"], "'code' is an expert of the pipeline"),
    ],
)
def test_bad_baseline_names(specs_copy, baselines, expected):
    set_params(specs_copy, baselines=baselines)
    with pytest.raises(SpecError, match=expected) as err:
        Specs(specs_copy).validate_all()
    assert "params.yaml" in str(err.value)


@pytest.mark.parametrize(
    "domain,verifier,body,expected",
    [
        ("math", "data/v.py", "def verify(r, c):\n    return True\n", "'math' is built in and has its own verifier"),
        ("units", "verifiers/v.py", None, "a verifier is a Python file under data/"),
        ("units", "data/v.txt", None, "a verifier is a Python file under data/"),
        ("units", "data/v.py", None, "no such file under"),
        ("units", "data/v.py", "def verify(r, c)\n    return True\n", "data/v.py:1: syntax error"),
        ("units", "data/v.py", "def score(r, c):\n    return True\n", "defines no top-level function `verify`"),
    ],
)
def test_a_bad_verifier_is_one_clear_line(specs_copy, domain, verifier, body, expected):
    rows = specs_copy / "data" / "units.jsonl"
    rows.parent.mkdir()
    rows.write_text('{"prompt": "How long?", "response": "12 m"}\n')
    if body is not None:
        (specs_copy / verifier).parent.mkdir(exist_ok=True)
        (specs_copy / verifier).write_text(body)
    spec = {"files": {"eval": "data/units.jsonl"}} if domain == "units" else {"eval": 5}
    edit_yaml(specs_copy / "specs" / "data.yaml", f"domains.{domain}", spec | {"verifier": verifier})
    with pytest.raises(SpecError, match=f"data.yaml: domains.{domain}.verifier = '{verifier}': .*{expected}"):
        Specs(specs_copy).data


def test_a_verifier_is_validated_without_running_it(specs_copy):
    (specs_copy / "data").mkdir()
    (specs_copy / "data" / "units.jsonl").write_text('{"prompt": "How long?", "response": "12 m"}\n')
    (specs_copy / "data" / "v.py").write_text("raise SystemExit('ran')\ndef verify(r, c):\n    return True\n")
    edit_yaml(
        specs_copy / "specs" / "data.yaml",
        "domains.units",
        {"files": {"eval": "data/units.jsonl"}, "verifier": "data/v.py"},
    )
    assert Specs(specs_copy).data.domains["units"].verifier == "data/v.py"


def test_the_data_spec_reads_the_files_it_names_once(specs_copy):
    """The checks of user data and verifiers run when the data spec is loaded, not at every access."""
    (specs_copy / "data").mkdir()
    (specs_copy / "data" / "units.jsonl").write_text('{"prompt": "How long?", "response": "12 m"}\n')
    (specs_copy / "data" / "v.py").write_text("def verify(r, c):\n    return True\n")
    edit_yaml(
        specs_copy / "specs" / "data.yaml",
        "domains.units",
        {"files": {"eval": "data/units.jsonl"}, "verifier": "data/v.py"},
    )
    specs = Specs(specs_copy)
    first = specs.data
    (specs_copy / "data" / "v.py").unlink()
    assert specs.data is first
    with pytest.raises(SpecError, match="verifier = 'data/v.py': no such file"):
        Specs(specs_copy).data


def test_the_merge_strategy_is_set_in_the_spec_file_only(specs_copy):
    """One default, in specs/merge.yaml: the model and `bar.merge.merge` have none."""
    data = yaml.safe_load((specs_copy / "specs" / "merge.yaml").read_text())
    assert Specs(specs_copy).merge.strategy == data.pop("strategy")
    (specs_copy / "specs" / "merge.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"merge.yaml: strategy: required key is missing"):
        Specs(specs_copy).merge


@pytest.mark.parametrize("file,prefix", [("experts/math", ""), ("upgrades/code.v2", ""), ("presets/tiny", "experts.")])
def test_the_old_stages_key_of_an_expert_names_phases(specs_copy, file, prefix):
    """An expert's mid-training, SFT and RLVR are its phases (`stages` are DVC's); the old key is one line."""
    set_params(specs_copy, preset="tiny")
    path = specs_copy / "specs" / f"{file}.yaml"
    path.write_text(path.read_text().replace("phases:", "stages:"))
    with pytest.raises(SpecError) as err:
        Specs(specs_copy).validate_all()
    assert str(err.value) == (
        f"{path}: {prefix}stages: renamed phases (mid-training, SFT and RLVR are an expert's phases; "
        f"a stage is a DVC stage); rename the key to {prefix}phases"
    )


def test_preset_errors_name_the_preset_file(specs_copy):
    set_params(specs_copy, preset="tiny")
    edit_yaml(specs_copy / "specs" / "presets" / "tiny.yaml", "model.seq_length", "long")
    with pytest.raises(SpecError, match=r"presets/tiny.yaml: model.seq_length = \"long\""):
        Specs(specs_copy).model
    set_params(specs_copy, preset="huge")
    with pytest.raises(SpecError, match=r"preset = 'huge'.*known presets: default, tiny"):
        Specs(specs_copy).model


@pytest.mark.parametrize(
    "file,key",
    [("experts/math", "phases.midtrain.batch_size"), ("train", "pretrain.batch_size"), ("router", "batch_size")],
)
def test_a_bad_value_the_preset_overrides_still_fails(specs_copy, file, key, capsys):
    """Each spec file is validated as written: the tiny preset overriding a key does not hide a
    bad value in the file (which would reach the default run, or re-train under the same spec)."""
    from bar.cli import main

    set_params(specs_copy, preset="tiny")
    assert _has(yaml.safe_load((specs_copy / "specs" / "presets" / "tiny.yaml").read_text()), file, key)
    edit_yaml(specs_copy / "specs" / f"{file}.yaml", key, "sixteen")
    assert main(["validate", "--root", str(specs_copy)]) == 2
    path = specs_copy / "specs" / f"{file}.yaml"
    assert capsys.readouterr().err == (
        f'error: {path}: {key} = "sixteen": Input should be a valid integer, unable to parse string as an integer\n'
    )


def _has(preset: dict, file: str, key: str) -> bool:
    node = preset["experts" if file.startswith("experts/") else file]
    for k in key.split("."):
        if not isinstance(node, dict) or k not in node:
            return False
        node = node[k]
    return True


def test_a_preset_value_is_checked_where_no_spec_takes_it(specs_copy):
    """The preset's RLVR settings are type-checked though no expert of the run has an RLVR phase."""
    set_params(specs_copy, preset="tiny", experts=["tool_use", "safety"])
    assert all(Specs(specs_copy).expert(e).phases.rlvr is None for e in ("tool_use", "safety"))
    tiny = specs_copy / "specs" / "presets" / "tiny.yaml"
    edit_yaml(tiny, "experts.phases.rlvr.group_size", "four")
    with pytest.raises(SpecError) as err:
        Specs(specs_copy).expert("safety")
    assert str(err.value).startswith(
        f'{tiny}: experts.phases.rlvr.group_size = "four": Input should be a valid integer'
    )


def test_a_preset_value_is_checked_with_the_file_for_checks_across_keys(specs_copy):
    """A preset may set a key whose check needs another the file sets (weighted_mean and weights)."""
    set_params(specs_copy, preset="tiny")
    edit_yaml(specs_copy / "specs" / "merge.yaml", "weights", {"math": 2.0, "code": 1.0})
    edit_yaml(specs_copy / "specs" / "presets" / "tiny.yaml", "merge", {"strategy": "weighted_mean"})
    assert Specs(specs_copy).merge.strategy == "weighted_mean"
    edit_yaml(specs_copy / "specs" / "merge.yaml", "weights", {})
    with pytest.raises(SpecError, match=r"specs/merge.yaml: \(top level\): strategy weighted_mean needs weights"):
        Specs(specs_copy).merge


def test_cli_validate_fails_fast_without_heavy_imports(specs_copy):
    edit_yaml(specs_copy / "specs" / "train.yaml", "anchor.optim.lr", 0)
    code = (
        "import sys; from bar.cli import main; rc = main(['validate', '--root', sys.argv[1]]);"
        "heavy = [m for m in ('torch', 'mlflow', 'megatron', 'transformers') if m in sys.modules];"
        "print('HEAVY', heavy); sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(specs_copy)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "anchor.optim.lr = 0" in out.stderr
    assert "HEAVY []" in out.stdout


def test_upgrade_spec_is_the_next_version_of_an_expert(specs_copy):
    specs = Specs(specs_copy)
    path = specs.upgrade("code", 2)
    assert yaml.safe_load(path.read_text())["version"] == specs.expert("code").version + 1
    with pytest.raises(SpecError, match=r"no version 5 of expert 'code' prepared; prepared: code.v2.yaml"):
        specs.upgrade("code", 5)
    shutil.copy(path, specs_copy / "specs" / "upgrades" / "math.v2.yaml")
    with pytest.raises(SpecError, match=r"math.v2.yaml: name = 'code': must be 'math'"):
        Specs(specs_copy).validate_all()


def fake_base(folder: Path, **config) -> Path:
    """What `bar validate` reads of a user's base model (json only): config and tokenizer."""
    import json

    folder.mkdir(parents=True)
    config = {
        "model_type": "llama",
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 176,
        "vocab_size": 100,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
    } | config
    (folder / "config.json").write_text(json.dumps(config))
    tokens = {
        "model": {"type": "BPE", "vocab": {f"t{i}": i for i in range(98)}},
        "added_tokens": [{"id": 98, "content": "<s>"}, {"id": 99, "content": "<|im_end|>"}],
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokens))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.mark.parametrize(
    "config,family,kv_channels",
    [
        ({}, "llama", None),
        ({"model_type": "olmo2"}, "olmo2", None),
        # Olmo 3 slides in the layers its layer_types say, Mistral in every layer.
        (
            {"model_type": "olmo3", "sliding_window": 64, "layer_types": ["sliding_attention", "full_attention"]},
            "olmo2",
            None,
        ),
        ({"model_type": "mistral", "sliding_window": 64}, "llama", None),
        # Qwen3's saved configs keep a sliding_window that use_sliding_window turns off; heads of 128.
        ({"model_type": "qwen3", "use_sliding_window": False, "sliding_window": 4096, "head_dim": 128}, "qwen3", 128),
    ],
)
def test_a_base_model_sets_its_family(specs_copy, config, family, kv_channels):
    fake_base(specs_copy / "data" / "base" / "llama", **({"layer_types": ["full_attention"] * 2} | config))
    (specs_copy / "specs" / "model.yaml").write_text("base: data/base/llama\nseq_length: 256\n")
    model = Specs(specs_copy).model
    assert (model.family, model.kv_channels) == (family, kv_channels)
    sliding = config["model_type"] in ("olmo3", "mistral") if config else False
    assert model.sliding_window == (64 if sliding else None)
    assert [model.window(i) for i in range(2)] == {"olmo3": [64, None], "mistral": [64, 64]}.get(
        config.get("model_type"), [None, None]
    )


def test_a_base_model_sets_the_architecture(specs_copy):
    fake_base(specs_copy / "data" / "base" / "llama")
    (specs_copy / "specs" / "model.yaml").write_text("base: data/base/llama\nseq_length: 256\nhidden_size: 64\n")
    model = Specs(specs_copy).model
    # 100 tokens, 5 of bar's special tokens missing (it has <|im_end|>): 105 rows, rounded up to 128.
    assert (model.num_layers, model.num_query_groups, model.ffn_hidden_size, model.vocab_size) == (2, 2, 176, 128)
    assert (model.rope_base, model.norm_eps, model.seq_length) == (500000.0, 1e-6, 256)
    assert model.rope_scaling_factor is None


@pytest.mark.parametrize(
    "base,config,expected",
    [
        ("/srv/llama", {}, ['base = "/srv/llama"', "must be a folder under data/base/", "dvc add"]),
        ("data/llama", {}, ["must be a folder under data/base/"]),
        ("data/base/llama2", {}, ["no such folder"]),
        (
            "data/base/llama",
            {"model_type": "qwen2"},
            ['model_type = "qwen2"', 'must be "llama" or "mistral" or "olmo2" or "olmo3" or "qwen3"'],
        ),
        (
            "data/base/llama",
            {"model_type": "llama", "sliding_window": 4096},
            ["sliding_window = 4096", "sliding-window attention", "must be null"],
        ),
        ("data/base/llama", {"attention_bias": True}, ["attention_bias = true", "must be false"]),
        ("data/base/llama", {"model_type": "qwen3_moe"}, ['model_type = "qwen3_moe"', '"qwen3"']),
        (
            "data/base/llama",
            {"model_type": "olmo3", "layer_types": ["sliding_attention", "chunked_attention"]},
            ['layer types = ["chunked_attention", "sliding_attention"]', 'or ["full_attention", "sliding_attention"]'],
        ),
        (
            "data/base/llama",
            {
                "model_type": "olmo3",
                "rope_parameters": {
                    "full_attention": {"rope_type": "yarn", "rope_theta": 1.0, "factor": 8.0},
                    "sliding_attention": {"rope_type": "default", "rope_theta": 1.0},
                },
            },
            ["rope_parameters differ between full_attention and sliding_attention", "one RoPE for every layer"],
        ),
        (
            "data/base/llama",
            {"model_type": "olmo2", "layer_types": ["sliding_attention", "full_attention"]},
            ['layer types = ["full_attention", "sliding_attention"]', 'must be ["full_attention"]'],
        ),
        (
            "data/base/llama",
            {"model_type": "qwen3", "use_sliding_window": True, "sliding_window": 4096},
            ["sliding_window = 4096", "must be null"],
        ),
        (
            "data/base/llama",
            {"model_type": "qwen3", "rope_parameters": {"rope_type": "yarn", "rope_theta": 1.0, "factor": 4.0}},
            ['rope type = "yarn"', 'must be "default" or "llama3"'],
        ),
        (
            "data/base/llama",
            {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1.0}},
            ['rope type = "yarn"', 'must be "default" or "llama3"'],
        ),
        (
            "data/base/llama",
            {
                "rope_parameters": {
                    "rope_type": "llama3",
                    "rope_theta": 1.0,
                    "factor": 8.0,
                    "low_freq_factor": 2.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192,
                }
            },
            ["rope low_freq_factor = 2.0", "must be 1.0"],
        ),
        (
            "data/base/llama",
            {"num_hidden_layers": 3},
            ["specs/model.yaml: num_layers = 4: the base data/base/llama has 3", "remove the key"],
        ),
    ],
)
def test_bad_base_model_one_clear_line(specs_copy, base, config, expected):
    fake_base(specs_copy / "data" / "base" / "llama", **config)
    (specs_copy / "specs" / "model.yaml").write_text(f"base: {base}\nseq_length: 256\nnum_layers: 4\n")
    with pytest.raises(SpecError) as err:
        Specs(specs_copy).model
    msg = str(err.value)
    assert "\n" not in msg and "specs/model.yaml" in msg
    if base == "data/base/llama" and "num_hidden_layers" not in config:  # the base's own config refused
        assert "data/base/llama/config.json: " in msg
    for fragment in expected:
        assert fragment in msg, (fragment, msg)


def test_an_anchor_of_yours_is_the_base_post_trained(specs_copy):
    fake_base(specs_copy / "data" / "base" / "llama")
    fake_base(specs_copy / "data" / "anchor" / "chat")
    (specs_copy / "specs" / "model.yaml").write_text(
        "base: data/base/llama\nanchor: data/anchor/chat\nseq_length: 256\n"
    )
    assert Specs(specs_copy).model.anchor == "data/anchor/chat"


@pytest.mark.parametrize(
    "anchor,base,config,tokens,expected",
    [
        ("data/anchor/chat", None, {}, None, ['anchor = "data/anchor/chat"', "name that base too"]),
        ("data/chat", "data/base/llama", {}, None, ["must be a folder under data/anchor/", "dvc add"]),
        (
            "data/anchor/chat",
            "data/base/llama",
            {"num_hidden_layers": 3},
            None,
            ["its num_layers is 3 and the base's (data/base/llama) 2", "same architecture and tokenizer"],
        ),
        (
            "data/anchor/chat",
            "data/base/llama",
            {"vocab_size": 128},
            None,
            ["its config.json vocab_size is 128 and the base's (data/base/llama) 100"],
        ),
        (
            "data/anchor/chat",
            "data/base/llama",
            {},
            {"t5": 6, "t6": 5},
            ["its tokenizer differs from the base's (data/base/llama): token 't5' is id 6 in the anchor's and 5"],
        ),
        ("data/anchor/chat", "data/base/llama", {"attention_bias": True}, None, ["attention_bias = true"]),
    ],
)
def test_a_bad_anchor_is_one_clear_line(specs_copy, anchor, base, config, tokens, expected):
    import json

    fake_base(specs_copy / "data" / "base" / "llama")
    folder = fake_base(specs_copy / "data" / "anchor" / "chat", **config)
    if tokens:
        spec = json.loads((folder / "tokenizer.json").read_text())
        spec["model"]["vocab"] |= tokens
        (folder / "tokenizer.json").write_text(json.dumps(spec))
    lines = [f"anchor: {anchor}", "seq_length: 256", *([f"base: {base}"] if base else [])]
    (specs_copy / "specs" / "model.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(SpecError) as err:
        Specs(specs_copy).model
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{specs_copy / 'specs' / 'model.yaml'}: anchor = ")
    for fragment in expected:
        assert fragment in msg, (fragment, msg)
