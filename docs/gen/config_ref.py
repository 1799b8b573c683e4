"""The config reference page, generated from the structured-config schemas.

Every key of a training job (``groktransfer.config.schema.TrainJobConfig``) and of the
analysis job (``groktransfer.analysis.settings.AnalyzeJobConfig``), with its type, its
default (written once, in the dataclass) and its meaning (the comment beside the field in
the source). The option files of each config group (``conf/<group>/*.yaml``) are listed
with their first comment line. Nothing on the page is typed by hand.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any, Iterator

from srcdoc import class_field_comments, md_escape

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class KeyDoc:
    key: str
    type: str
    default: str
    meaning: str
    owner: str  # the dataclass that declares it


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        rest = [a for a in args if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in rest)
        return f"{inner} or null" if len(rest) < len(args) else inner
    if origin in (list, typing.List):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin in (dict, typing.Dict):
        return f"map {_type_name(args[0])} → {_type_name(args[1])}" if args else "map"
    if inspect.isclass(tp) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in tp)
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def _default_text(value: Any) -> str:
    """A default as the YAML a user would write; ``value`` is the field's value in a default instance."""
    from omegaconf import MISSING

    if isinstance(value, str) and value == MISSING:
        return "(required: set by the group's option)"
    value = _plain(value)
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        text = str(value).replace("'", "")
        return f"`{text}`" if value else ("`[]`" if isinstance(value, list) else "`{}`")
    return f"`{value}`"


def _is_dataclass_type(tp: Any) -> bool:
    return inspect.isclass(tp) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) is typing.Union:
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def walk(schema: type, prefix: str = "", instance: Any = None) -> Iterator[KeyDoc]:
    """Every leaf key under ``schema`` (nested dataclasses expanded), in declaration order.

    Defaults are read from a default instance, so a nested block keeps the defaults its
    parent gives it (``transfer.grokked.min_test_acc`` is 0.999, not CheckpointCriteria's 0.0).
    """
    instance = schema() if instance is None else instance
    hints = typing.get_type_hints(schema)
    comments: dict = {}
    for cls in reversed(schema.__mro__):  # inherited fields keep their base class's comment
        if dataclasses.is_dataclass(cls) and cls is not object:
            comments.update(class_field_comments(Path(inspect.getsourcefile(cls)), cls.__name__))
    for f in dataclasses.fields(schema):
        tp = _unwrap_optional(hints[f.name])
        key = f"{prefix}{f.name}"
        value = getattr(instance, f.name)
        if _is_dataclass_type(tp):
            yield from walk(tp, key + ".", value if dataclasses.is_dataclass(value) else tp())
            continue
        yield KeyDoc(key, _type_name(hints[f.name]), _default_text(value), comments.get(f.name, ""), schema.__name__)


def nested_sections(schema: type, prefix: str = "") -> Iterator[tuple[str, type]]:
    """(key prefix, dataclass) for ``schema`` and every dataclass nested in it."""
    yield prefix, schema
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        tp = _unwrap_optional(hints[f.name])
        if _is_dataclass_type(tp):
            yield from nested_sections(tp, f"{prefix}{f.name}.")


def _doc_first_paragraph(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _table(keys: list[KeyDoc]) -> list[str]:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for k in keys:
        lines.append(f"| `{k.key}` | {md_escape(k.type)} | {md_escape(k.default)} | {md_escape(k.meaning) or '–'} |")
    return lines


def _first_sentence(comment_lines: list[str]) -> str:
    """The header comment's first sentence (a command example after a colon is cut)."""
    text = " ".join(comment_lines).strip()
    text = re.split(r"(?<! al)(?<! e\.g)\.\s+(?=[A-Z`(])", text, maxsplit=1)[0]
    text = re.split(r":?\s+`?python scripts/", text, maxsplit=1)[0]
    return text.rstrip(".:") + "."


def _group_options(group: str) -> list[tuple[str, str]]:
    """(option name, first sentence of its header comment) of every ``conf/<group>/*.yaml``,
    and for ``hydra/launcher`` also the launchers that installed Hydra plugins register."""
    out = {}
    for path in sorted((REPO / "conf" / group).glob("*.yaml")):
        block: list[str] = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                if block or line.strip():
                    break
                continue
            text = line.lstrip("# ").strip()
            if text.startswith("@package"):
                continue
            if not text and block:
                break
            if text:
                block.append(text)
        out[path.name[: -len(".yaml")]] = _first_sentence(block)
    if group == "hydra/launcher":
        from hydra.core.config_store import ConfigStore
        from hydra.core.plugins import Plugins

        Plugins.instance()  # registers the installed launchers' configs
        for name in ConfigStore.instance().list(group):
            out.setdefault(name[: -len(".yaml")], LAUNCHERS.get(name[: -len(".yaml")], "a Hydra launcher plugin"))
    return sorted(out.items())


LAUNCHERS = {
    "basic": "Hydra's default: the jobs one after another in this process",
    "joblib": "parallel local processes (`hydra.launcher.n_jobs`)",
    "submitit_local": "submitit, local processes",
    "submitit_slurm": "Hydra's submitit SLURM launcher (`slurm` adds waiting and lost-job records)",
    "ensemble": "this project's: compatible jobs train together as one seed-ensemble model (see the GPUs guide)",
}


TRAIN_GROUPS = ("task", "model", "optimizer", "transfer", "logger")
OTHER_GROUPS = ("experiment", "debug", "hydra/launcher", "local")


#: blocks whose keys are the chosen entry's own schema: the task family's, the model architecture's
OWN_SCHEMAS = {
    "task": "Each task family declares its keys as its own schema (a subclass of `TaskConfig`); the "
    "`task.name` chooses the family. A key the family does not declare is refused (exit 2), naming the "
    "family's keys, and a key is part of a run's identity only where it differs from its default.",
    "model": "Each model architecture declares its keys as its own schema (a subclass of `ModelConfig`); "
    "`model.architecture` chooses it. A key it does not declare is refused (exit 2).",
}


def own_schemas(block: str) -> list[str]:
    """A table per built-in task family / model architecture: the keys of its own schema."""
    from groktransfer.model.registry import MODELS
    from groktransfer.tasks.registry import TASK_FAMILIES

    registry = TASK_FAMILIES if block == "task" else MODELS
    out = [OWN_SCHEMAS[block], ""]
    for name in registry.names():
        entry = registry.get(name)
        if not type(entry).__module__.startswith("groktransfer.") and not getattr(entry, "__module__", "").startswith("groktransfer."):
            continue  # an installed plugin's: documented by the plugin
        schema = entry.config_class
        what = f"task family `{name}` (tasks: {', '.join(f'`{t}`' for t in entry.task_names)})" if block == "task" else f"architecture `{name}`"
        out += [f"#### {block} of the {what}", "", f"Schema `{schema.__name__}` (Hydra: `{name}_schema`): {_doc_first_paragraph(schema)}", ""]
        out += _table(list(walk(schema, f"{block}."))) + [""]
    return out


def config_page() -> str:
    from groktransfer.analysis.settings import AnalyzeJobConfig
    from groktransfer.config.schema import TrainJobConfig

    out = [
        "# Config keys",
        "",
        "<!-- generated by docs/gen/config_ref.py from groktransfer.config.schema and",
        "     groktransfer.analysis.settings at build time: do not edit by hand -->",
        "",
        "Every key of a training job (`scripts/train.py`, schema `TrainJobConfig` in",
        "`src/groktransfer/config/schema.py`) and of the analysis job (`scripts/analyze.py`,",
        "schema `AnalyzeJobConfig` in `src/groktransfer/analysis/settings.py`), with its type,",
        "its default and its meaning, generated from the schema when this site is built.",
        "Defaults are the schema's; an option file of a group (e.g. `task=subtract`, an",
        "`experiment=` preset) may set other values. Set a key on the command line with",
        "`key=value`; a key that is not listed here, a wrong type or a value outside a closed",
        "choice is refused when Hydra composes the config (exit code 2).",
        "",
        "## Config groups and their options",
        "",
        "| group | option | what it is |",
        "|---|---|---|",
    ]
    for group in (*TRAIN_GROUPS, *OTHER_GROUPS):
        for name, first in _group_options(group):
            out.append(f"| `{group}` | `{name}` | {md_escape(first) or '–'} |")
    out += ["", "## Training job (`scripts/train.py`)", ""]
    keys = list(walk(TrainJobConfig))
    top = [k for k in keys if "." not in k.key]
    out += ["### Top-level keys", "", *_table(top), ""]
    groups: dict[str, list[KeyDoc]] = {}
    for k in keys:
        if "." in k.key:
            groups.setdefault(k.key.split(".")[0], []).append(k)
    sections = dict(nested_sections(TrainJobConfig))
    for name, members in groups.items():
        cls = sections[name + "."]
        out += [f"### {name}", "", f"`{name}.*` — schema `{cls.__name__}`: {_doc_first_paragraph(cls)}", ""]
        out += _table(members) + [""]
        if name in OWN_SCHEMAS:
            out += own_schemas(name)
    out += ["## Analysis job (`scripts/analyze.py`)", ""]
    keys = list(walk(AnalyzeJobConfig))
    sections = dict(nested_sections(AnalyzeJobConfig))
    top = [k for k in keys if "." not in k.key]
    out += ["### Analysis top-level keys", "", *_table(top), ""]
    for name in ("analysis", "wandb"):
        members = [k for k in keys if k.key.startswith(name + ".")]
        cls = sections[name + "."]
        out += [f"### {name}", "", f"`{name}.*` — schema `{cls.__name__}`: {_doc_first_paragraph(cls)}", ""]
        out += _table(members) + [""]
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # python docs/gen/config_ref.py > /tmp/config.md
    sys.stdout.write(config_page())
