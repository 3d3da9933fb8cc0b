"""bar's held-out splits as lm-evaluation-harness tasks, and lm-eval run on an exported model.

`write_tasks` writes, per domain, the task `bar_<domain>` (YAML and the JSONL of its held-out
prompts), a group `bar` (their unweighted mean, as bar's `overall`), a `utils.py` whose scoring
calls the domain's verifier (`bar.data.verify`), copies of the user's verifiers and a README with
the `lm_eval` command. lm-eval renders a prompt with the export's chat template and generates
greedily until bar's stop tokens, so it sees the token ids bar's own scoring decodes from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bar.specs import EvalSpec, HarnessSpec, InputError

GROUP = "bar"
INSTALL = "pip install -e '.[eval]'"

UTILS = '''"""Written by bar.harness: the docs of a bar_<domain> task and its score under bar's verifier."""

from pathlib import Path

from bar import harness

HERE = Path(__file__).resolve().parent


def load(domain, **_):
    return harness.load(HERE, domain)


def prompt(doc):
    return doc["prompt"]


def target(doc):
    return ""  # no reference answer in the prompt: lm-eval then appends no delimiter to it


process_results = harness.process_results
'''

TASK = """# Written by bar.harness: domain {domain}'s held-out prompts as bar's evaluate scores them.
task: {task}
custom_dataset: !function utils.load
dataset_kwargs: {{domain: {domain}}}
test_split: test
output_type: generate_until
# The user turn alone: --apply_chat_template gives bar.tokenizer.prompt_ids' token ids (tests/test_harness.py).
doc_to_text: !function utils.prompt
doc_to_target: !function utils.target
num_fewshot: 0
generation_kwargs:
  until: {stops}
  max_gen_toks: {max_new_tokens}
  do_sample: false
  temperature: 0.0
process_results: !function utils.process_results
metric_list:
  - {{metric: pass_rate, aggregation: mean, higher_is_better: true}}
metadata: {{version: 1}}
"""

GROUP_YAML = """# Written by bar.harness: every domain, averaged as bar's `overall`.
group: {group}
task: {tasks}
aggregate_metric_list:
  - {{metric: pass_rate, aggregation: mean, weight_by_size: false}}
metadata: {{version: 1}}
"""

README = """# bar's held-out splits as lm-evaluation-harness tasks

Written by `evaluate` (bar.harness). From the project's root, with `{install}`:

    lm_eval --model hf --model_args pretrained=outputs/fit_router/hf,trust_remote_code=True,max_length={max_length} \\
      --include_path outputs/evaluate/harness --tasks {group} --apply_chat_template --batch_size 1

`max_length` keeps lm-eval from cutting the longest prompt ({longest} tokens with the chat template),
which bar's own scoring reads whole.
"""


def task_name(domain: str) -> str:
    return f"{GROUP}_{domain}"


def is_bar(task: str) -> bool:
    """A task (or the group) `write_tasks` writes."""
    return task == GROUP or task.startswith(f"{GROUP}_")


def write_tasks(folder: Path, domains: list[str], spec: EvalSpec, tok) -> int:
    """Write the tasks of `domains` into `folder` (replaced); return the context length they need:
    the longest prompt under the chat template plus `spec.max_new_tokens`. A domain whose held-out
    examples are conversations (several turns, tools) is left out: a task's row is one user turn."""
    from bar.data.domains import MODULES
    from bar.data.verify import VERIFIER
    from bar.files import output, write_jsonl
    from bar.scoring import eval_examples
    from bar.tokenizer import prompt_ids, stop_tokens

    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    longest, written = 0, []
    for d in domains:
        examples = eval_examples(d, spec)
        if any(e.conversation or e.tools for e in examples):
            continue  # a task's row is one user turn: a domain with conversations is scored by bar alone
        written.append(d)
        # The check as a JSON string: one column type for every row (datasets infers a schema).
        write_jsonl(
            folder / f"{d}.jsonl", [{"domain": d, "prompt": e.prompt, "check": json.dumps(e.check)} for e in examples]
        )
        longest = max([longest, *(len(prompt_ids(tok, e.prompt)) for e in examples)])
        if d not in MODULES and (verifier := output("prepare_data", d, VERIFIER)).is_file():
            shutil.copyfile(verifier, folder / f"{d}.{VERIFIER}")
        stops = json.dumps(stop_tokens(tok))
        (folder / f"{task_name(d)}.yaml").write_text(
            TASK.format(domain=d, task=task_name(d), stops=stops, max_new_tokens=spec.max_new_tokens)
        )
    (folder / f"{GROUP}.yaml").write_text(
        GROUP_YAML.format(group=GROUP, tasks=json.dumps([task_name(d) for d in written]))
    )
    (folder / "utils.py").write_text(UTILS)
    max_length = longest + spec.max_new_tokens
    skipped = [d for d in domains if d not in written]
    note = f"\nNot written: {', '.join(skipped)} (held-out conversations, which a task's one user turn cannot hold).\n"
    (folder / "README.md").write_text(
        README.format(install=INSTALL, max_length=max_length, group=GROUP, longest=longest) + (note if skipped else "")
    )
    return max_length


def load(folder: Path, domain: str) -> dict:
    """A task's docs (lm-eval's `custom_dataset`), its copied verifier registered for scoring."""
    import datasets

    from bar.data.verify import VERIFIER, use_verifier

    if (verifier := folder / f"{domain}.{VERIFIER}").is_file():
        use_verifier(domain, verifier)
    rows = [json.loads(line) for line in (folder / f"{domain}.jsonl").read_text().splitlines()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """One reply's score: 100 if the domain's verifier passes it (bar's pass rates are 0-100)."""
    from bar.data.verify import verify

    return {"pass_rate": 100.0 * verify(doc["domain"], results[0], json.loads(doc["check"]))}


def require(spec: HarnessSpec) -> None:
    """Refuse, before any work, tasks that cannot run: lm-eval missing or an include folder absent."""
    if not spec.tasks:
        return
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise InputError(
            f"specs/eval.yaml: harness.tasks = {spec.tasks}: lm-eval is not installed; run `{INSTALL}`"
        ) from None
    for path in spec.include:
        if not Path(path).is_dir():
            raise InputError(f"specs/eval.yaml: harness.include: {path} is not a folder; put your lm-eval tasks there")


def run(
    export: Path, tasks: list[str], include: list[Path], max_length: int, log_samples: bool = False, batch_size: int = 1
) -> dict:
    """lm-eval's `simple_evaluate` of `tasks` on an exported model (transformers backend, its chat
    template, greedy): {"<task>/<metric>": value}, and with `log_samples` also {"samples": {task:
    [reply, ...] in the docs' order}, "outcomes": {task: [pass_rate of each reply, 0 or 100]}} for
    bar's tasks. Exports pad on the left, so the scores do not depend on `batch_size`."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(export), "trust_remote_code": True, "max_length": max_length},
        tasks=list(tasks),
        # bar's own tasks alone need no index of lm-eval's thousands of task files (~20 s).
        task_manager=TaskManager(
            include_path=[str(p) for p in include], include_defaults=not all(is_bar(t) for t in tasks)
        ),
        batch_size=batch_size,
        apply_chat_template=True,
        log_samples=log_samples,
        device="cpu",
    )
    scores = {}
    for task, metrics in out["results"].items():
        for key, value in metrics.items():
            metric, _, filtered = key.partition(",")  # "pass_rate,none": a metric and its filter
            if key not in ("alias", "sample_len") and isinstance(value, int | float):
                scores[f"{task}/{metric}" + (f"_{filtered}" if filtered not in ("", "none") else "")] = value
    if log_samples:
        ordered = {t: sorted(rows, key=lambda s: s["doc_id"]) for t, rows in out["samples"].items()}
        scores["samples"] = {t: [s["resps"][0][0] for s in rows] for t, rows in ordered.items()}
        scores["outcomes"] = {t: [s["pass_rate"] for s in rows] for t, rows in ordered.items() if is_bar(t)}
    return scores


def score_exports(exports: dict[str, Path], spec: HarnessSpec, folder: Path, max_length: int) -> dict:
    """`run` of `spec.tasks` on each exported model ({name: folder}), bar's tasks in `folder`:
    {name: {"<task>/<metric>": value}}; {} without tasks."""
    include = [Path(folder), *map(Path, spec.include)]
    return {name: run(path, spec.tasks, include, max_length) for name, path in exports.items()} if spec.tasks else {}


def markdown(scores: dict[str, dict[str, float]]) -> str:
    """report.md's section: one row per model, one column per task and metric."""
    cols = sorted({k for s in scores.values() for k in s if not k.endswith("_stderr")})
    cell = lambda s, c: f"{s[c]:.2f}" + (f" ± {s[c + '_stderr']:.2f}" if c + "_stderr" in s else "") if c in s else ""
    lines = [
        "## lm-evaluation-harness",
        "",
        "`specs/eval.yaml: harness`, run by lm-eval on each exported model (greedy, chat template, batch size 1),",
        "± its standard error. `bar_<domain>` is the domain's held-out split above, scored by its verifier.",
        "",
        "| model | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    lines += [f"| {m} | " + " | ".join(cell(s, c) for c in cols) + " |" for m, s in scores.items()]
    return "\n".join(lines) + "\n"
