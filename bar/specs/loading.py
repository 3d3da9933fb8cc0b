"""Reading the specs: params.yaml, the spec files, and the preset overlaid on them.

A preset (`params.yaml: preset`) overlays `specs/presets/<preset>.yaml` on the spec files,
section by section, so the `tiny` test run is the default run scaled down, not a second set of
specs. Each file is validated as written, the preset's values on their own (types and bounds),
and the result of the overlay; then the checks across files run (`bar.specs.checks`), once.
A bad spec raises `SpecError` with one line naming the file, the key path, the value and what
is allowed, before any work starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from bar.specs import checks
from bar.specs.base_model import base_architecture, check_anchor
from bar.specs.declarations import (
    PRESET_SECTIONS,
    SPEC_FILES,
    BaselinesSpec,
    DataSpec,
    EvalSpec,
    MergeSpec,
    ModelSpec,
    ParamsSpec,
    PromotionSpec,
    RouterSpec,
    Spec,
    TokenizerSpec,
    TrainStagesSpec,
)
from bar.specs.errors import InputError, SpecError
from bar.specs.experts import ExpertSpec

# Keys renamed in an expert spec (old -> new): the old one fails naming the new one.
RENAMED = {"stages": "phases"}


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found (expected a YAML spec here)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SpecError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None


def overlay(base: Any, over: Any) -> Any:
    """`over` merged over `base`, key by key through mappings."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: overlay(base.get(k), v) for k, v in over.items()}}
    return over


def _has_path(tree: Any, loc: tuple) -> bool:
    for key in loc:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the model allows in the mapping that holds `loc`'s last key."""
    fields = model.model_fields
    for key in loc[:-1]:
        field = fields.get(key) if isinstance(key, str) else None
        ann = getattr(field, "annotation", None)
        args = getattr(ann, "__args__", ())
        sub = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None and isinstance(key, str) and args:  # dict[str, Model]: the key is a name
            sub = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None:
            if not isinstance(key, str) or field is None:
                continue
            return []
        fields = sub.model_fields
    return list(fields)


def _one_line(model: type[Spec], errors: list[dict], where: Path, prefix: tuple) -> SpecError:
    """The first of pydantic's `errors` as one line naming the file, key path, value and fix."""
    # An unknown key (a typo) usually explains a missing one: report it first.
    errors = sorted(errors, key=lambda err: err["type"] != "extra_forbidden")
    err = errors[0]
    loc = tuple(err["loc"])
    key = ".".join(str(k) for k in prefix + loc) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    allowed = ", ".join(_fields_at(model, loc))
    value = f" = {json.dumps(err.get('input'), default=str)}"
    if err["type"] == "extra_forbidden":
        msg = f"unknown key; allowed keys here: {allowed}"
    elif loc and loc[-1] == "[key]":  # a key of a mapping with fixed key names (e.g. domains)
        key = key.removesuffix(".[key]")
        msg, value = f"unknown key; allowed keys here: {msg.removeprefix('Input should be ')}", ""
    elif err["type"] == "missing":
        msg, value = f"required key is missing; keys here: {allowed}", ""
    elif isinstance(err.get("input"), dict):
        value = ""  # a check across several keys: the message names them
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return SpecError(f"{where}: {key}{value}: {msg}{more}")


def validate(
    model: type[Spec],
    data: Any,
    path: Path,
    preset_path: Path | None = None,
    preset_data: Any = None,
    prefix: tuple = (),
) -> Spec:
    """`model` of `data`, or SpecError naming the file (the preset's if it set the key)."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as e:
        loc = tuple(sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")[0]["loc"])
        if preset_path is not None and loc and _has_path(preset_data, loc):
            raise _one_line(model, e.errors(), preset_path, prefix) from None
        raise _one_line(model, e.errors(), path, ()) from None


def validate_overlay(model: type[Spec], data: Any, path: Path, prefix: tuple) -> None:
    """The keys a preset section sets, each checked against `model` on its own (unknown keys,
    types, bounds); what it leaves out and the checks across keys are the overlay's to pass."""
    if data is None:
        return
    try:
        model.model_validate(data)
    except ValidationError as e:
        # A missing key comes from the spec file; a check across keys (value_error) needs them.
        errors = [err for err in e.errors() if err["type"] not in ("missing", "value_error")]
        if errors:
            raise _one_line(model, errors, path, prefix) from None


def _renamed(data: Any, path: Path, prefix: str = "") -> None:
    for old, new in RENAMED.items():
        if isinstance(data, dict) and old in data:
            raise SpecError(
                f"{path}: {prefix}{old}: renamed {new} (mid-training, SFT and RLVR are an expert's "
                f"phases; a stage is a DVC stage); rename the key to {prefix}{new}"
            )


class Specs:
    """The validated specs of one repository checkout, loaded on first use.

    `Specs(root).train.anchor` reads `params.yaml`, `specs/train.yaml` and the preset's
    `train` section, validates them and checks them against the other specs; later accesses
    reuse the result.
    """

    def __init__(self, root: Path | str = "."):
        self.root = Path(root).resolve()
        self._cache: dict[str, Any] = {}

    def path(self, name: str) -> Path:
        return self.root / "specs" / f"{name}.yaml"

    @property
    def params(self) -> ParamsSpec:
        if "params" not in self._cache:
            path = self.root / "params.yaml"
            self._cache["params"] = validate(ParamsSpec, read_yaml(path), path)
        return self._cache["params"]

    @property
    def preset_path(self) -> Path:
        return self.root / "specs" / "presets" / f"{self.params.preset}.yaml"

    def _preset(self) -> dict:
        if "preset" not in self._cache:
            path = self.preset_path
            if not path.exists():
                known = sorted(p.stem for p in path.parent.glob("*.yaml"))
                raise SpecError(
                    f"{self.root / 'params.yaml'}: preset = {self.params.preset!r}: "
                    f"no file {path.relative_to(self.root)}; known presets: {', '.join(known)}"
                )
            data = read_yaml(path) or {}
            missing = [s for s in PRESET_SECTIONS if s not in data]
            unknown = [s for s in data if s not in PRESET_SECTIONS]
            if not isinstance(data, dict) or missing or unknown:
                raise SpecError(
                    f"{path}: a preset has the sections {', '.join(PRESET_SECTIONS)} "
                    f"(empty is {{}}): missing {missing}, unknown {unknown}"
                )
            _renamed(data["experts"], path, "experts.")
            for name, model in [*SPEC_FILES.items(), ("experts", ExpertSpec)]:
                validate_overlay(model, data[name], path, (name,))
            self._cache["preset"] = data
        return self._cache["preset"]

    def _load(self, name: str) -> Spec:
        """specs/<name>.yaml as written, then with the preset's section over it; checked once."""
        if name not in self._cache:
            path, model = self.path(name), SPEC_FILES[name]
            written = read_yaml(path)
            over = self._preset()[name] or {}
            data = overlay(written, over)
            if name == "model":
                written, data = self._with_base(written, path, {}), self._with_base(data, path, over)
            validate(model, written, path)  # a value the preset overrides must be valid too
            spec = validate(model, data, path, self.preset_path, over, prefix=(name,))
            if name in checks.SPEC_CHECKS:
                checks.SPEC_CHECKS[name](self, spec)
            self._cache[name] = spec
        return self._cache[name]

    def _with_base(self, data: Any, path: Path, over: dict) -> Any:
        """`data` with the architecture of the user's base model (`base`), which the spec may
        repeat but not contradict; the user's anchor (`anchor`) must be that base post-trained."""
        if isinstance(data, dict) and data.get("anchor") is not None and data.get("base") is None:
            raise SpecError(
                f"{path}: anchor = {json.dumps(data['anchor'])}: an anchor of yours is a base post-trained: "
                f"name that base too (base: data/base/<name>), whose tokenizer and architecture it shares"
            )
        if not isinstance(data, dict) or data.get("base") is None:
            return data
        base = data["base"]
        if not isinstance(base, str) or not checks.inside(base, "data", "base"):
            raise SpecError(
                f"{path}: base = {json.dumps(base)}: the base model must be a folder under data/base/ "
                f"in the repository (DVC re-runs tokenizer and pretrain_base when it changes); copy or "
                f"`dvc add` it there and write data/base/<name>"
            )
        key = f"base:{base}"
        if key not in self._cache:
            try:
                self._cache[key] = base_architecture(self.root / base)
            except InputError as e:
                raise SpecError(f"{path}: base = {json.dumps(base)}: {e}") from None
        arch = self._cache[key]
        if (anchor := data.get("anchor")) is not None:
            self._check_anchor(anchor, base, arch, path)
        for key, value in arch.items():
            if key in data and data[key] != value:
                where, name = (self.preset_path, f"model.{key}") if key in over else (path, key)
                raise SpecError(
                    f"{where}: {name} = {json.dumps(data[key])}: the base {base} has {value}; "
                    f"remove the key (the base sets it) or set it to {value}"
                )
        return data | arch

    def _check_anchor(self, anchor: Any, base: str, arch: dict, path: Path) -> None:
        where = f"{path}: anchor = {json.dumps(anchor)}"
        if not isinstance(anchor, str) or not checks.inside(anchor, "data", "anchor"):
            raise SpecError(
                f"{where}: the anchor must be a folder under data/anchor/ in the repository (DVC re-runs "
                f"train_anchor when it changes); copy or `dvc add` it there and write data/anchor/<name>"
            )
        key = f"anchor:{anchor}"
        if key not in self._cache:
            try:
                check_anchor(self.root, anchor, base, arch)
            except InputError as e:
                raise SpecError(f"{where}: {e}") from None
            self._cache[key] = True

    @property
    def model(self) -> ModelSpec:
        return self._load("model")

    @property
    def tokenizer(self) -> TokenizerSpec:
        return self._load("tokenizer")

    @property
    def data(self) -> DataSpec:
        return self._load("data")

    @property
    def train(self) -> TrainStagesSpec:
        return self._load("train")

    @property
    def eval(self) -> EvalSpec:
        return self._load("eval")

    @property
    def promotion(self) -> PromotionSpec:
        return self._load("promotion")

    @property
    def merge(self) -> MergeSpec:
        return self._load("merge")

    @property
    def router(self) -> RouterSpec:
        return self._load("router")

    @property
    def baselines(self) -> BaselinesSpec:
        return self._load("baselines")

    def baseline(self, name: str) -> str:
        """The kind of baseline `name` is: monolithic, sequential or ablation (`checks.baseline_kind`)."""
        return checks.baseline_kind(self, name)

    def expert(self, name: str) -> ExpertSpec:
        """specs/experts/<name>.yaml with the preset's `experts` section merged over it.

        The preset's phase overrides apply to the phases the expert has (a preset that
        shortens RLVR does not give the SFT-only experts an RLVR phase).
        """
        path = self.path(f"experts/{name}")
        if not path.exists():
            known = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise SpecError(
                f"{path}: no spec for expert {name!r}; known experts: {', '.join(known)} "
                f"(add specs/experts/{name}.yaml or fix params.yaml: experts)"
            )
        return self._expert_at(path, name)

    def upgrade(self, name: str, version: int) -> Path:
        """specs/upgrades/<name>.v<version>.yaml: a prepared version of an expert spec (validated),
        applied by copying it over specs/experts/<name>.yaml (what the upgrade flow does)."""
        path = self.path(f"upgrades/{name}.v{version}")
        if not path.exists():
            known = sorted(p.name for p in path.parent.glob(f"{name}.v*.yaml"))
            raise SpecError(
                f"{path}: no version {version} of expert {name!r} prepared; "
                f"prepared: {', '.join(known) or 'none'} (write specs/upgrades/{name}.v{version}.yaml)"
            )
        spec = self._expert_at(path, name)
        if spec.version != version:
            raise SpecError(f"{path}: version = {spec.version}: must be {version}, as in the file name")
        return path

    def _expert_at(self, path: Path, name: str) -> ExpertSpec:
        key = str(path)
        if key not in self._cache:
            written = read_yaml(path) or {}
            _renamed(written, path)
            over = dict(self._preset()["experts"] or {})
            if isinstance(written, dict) and isinstance(over.get("phases"), dict):
                mine = written.get("phases") or {}
                over["phases"] = {k: v for k, v in over["phases"].items() if k in mine}
            validate(ExpertSpec, written, path)
            spec = validate(ExpertSpec, overlay(written, over), path, self.preset_path, over, prefix=("experts",))
            checks.expert(self, spec, path, name)
            self._cache[key] = spec
        return self._cache[key]

    def validate_all(self) -> None:
        """Every spec file: params.yaml, specs/*.yaml, every expert spec (merged or not: the
        ablations too), every upgrade, and the baselines params.yaml lists."""
        for name in SPEC_FILES:
            self._load(name)
        for path in sorted(self.path("experts/x").parent.glob("*.yaml")):
            self.expert(path.stem)
        for name in self.params.experts:
            self.expert(name)  # names a file that exists
        for name in self.params.baselines:
            self.baseline(name)
        for path in sorted(self.path("upgrades/x").parent.glob("*.v*.yaml")):
            name, _, version = path.name.removesuffix(".yaml").partition(".v")
            if not version.isdigit():
                raise SpecError(f"{path}: upgrade specs are named <expert>.v<version>.yaml")
            self.upgrade(name, int(version))
