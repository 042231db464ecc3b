"""Loading a study: YAML text (bounded, duplicate keys refused) -> preset merged -> a validated Study, kept with
its source (the file named in every error), the preset applied and the presets the file offers."""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.study.schema import Study, format_validation_error
from plugins.errors import ConfigError, suggest

__all__ = ["MAX_STUDY_BYTES", "MAX_YAML_NODES", "LoadedStudy", "as_loaded", "load_study", "parse_study", "read_yaml"]


@dataclass(frozen=True)
class LoadedStudy:
    """A validated study and where it came from: `source` names it in errors (a file, or a storage)."""

    study: Study
    source: str = "<study>"
    preset: str | None = None                 # the preset applied (its overrides are merged into `study`)
    presets: tuple[str, ...] = ()             # every preset the study file offers


def as_loaded(study: Study | LoadedStudy) -> LoadedStudy:
    """A LoadedStudy as is; a bare Study (built in code) as one from '<study>'."""
    return study if isinstance(study, LoadedStudy) else LoadedStudy(study)


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "axes":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_study(raw: Any, *, source: str = "<study>", preset: str | None = None) -> LoadedStudy:
    """Validate an already-parsed YAML document (with `presets` applied) into a Study, with where it came from."""
    if raw is None:
        raise ConfigError(f"{source}: the file is empty; a study needs at least `name:`")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a study file is a YAML mapping, got {type(raw).__name__}")
    raw = dict(raw)
    presets = raw.pop("presets", {}) or {}
    if not isinstance(presets, dict):
        raise ConfigError(f"{source}: presets: expected a mapping of preset name -> overrides")
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"{source}: presets: " + suggest(preset, presets, what="preset"))
        if not isinstance(presets[preset], dict):
            raise ConfigError(f"{source}: presets.{preset}: expected a mapping of overrides")
        named = "name" in presets[preset]
        raw = _deep_merge(raw, presets[preset])
        if not named and isinstance(raw.get("name"), str):
            # a preset is its own study (own folder, Optuna study, MLflow experiment and report):
            # `scan_ablation` with `--preset smoke` runs as `scan_ablation-smoke`
            raw["name"] = f"{raw['name']}-{preset}"
    try:
        study = Study.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err, Study)) from None
    return LoadedStudy(study, source=source, preset=preset, presets=tuple(presets))


MAX_STUDY_BYTES = 1 << 20          # a study file is a few KiB; anything near this is a mistake or an attack
MAX_YAML_NODES = 100_000           # YAML nodes after alias expansion (an alias bomb expands to billions)


class _StudyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, plus: duplicate keys are an error, and the document's size after alias
    expansion is bounded before anything is built from it."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise _DuplicateKey(key, key_node.start_mark)
            except TypeError:
                continue  # unhashable keys fail in the base class with its own message
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, mark: Any) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.problem_mark, self.problem = key, mark, f"duplicate key {key!r}"


def _expanded_nodes(root: yaml.Node, limit: int) -> int:
    """How many nodes `root` has with every alias expanded, counting no further than `limit`."""
    count, stack = 0, [root]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack.extend((k, v))
    return count


def _safe_load(text: str, source: str) -> Any:
    """yaml.safe_load with duplicate keys refused and alias expansion bounded (before it happens)."""
    loader = _StudyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise ConfigError(f"{source}: the YAML expands to more than {MAX_YAML_NODES:,} values (anchors and "
                              "aliases repeated inside each other?); study files are limited to that")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _near_files(path: Path) -> str:
    """'. Did you mean studies/scan_ablation.yaml?' for a mistyped name of a study file beside it, else ''."""
    folder = path.parent
    if not folder.is_dir():
        return ""
    close = difflib.get_close_matches(path.name, sorted(p.name for p in folder.glob("*.y*ml")), n=1, cutoff=0.6)
    return f". Did you mean {folder / close[0]}?" if close else ""


def load_study(path: str | Path, *, preset: str | None = None) -> LoadedStudy:
    """Read, merge the preset, validate. Raises ConfigError naming the file and key."""
    path = Path(path)
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_STUDY_BYTES:
            raise ConfigError(f"{source}: the study file is {size / 2**20:.1f} MiB; study files are limited to "
                              f"{MAX_STUDY_BYTES // 2**10} KiB (list seeds as a range in a script, not by the "
                              "million)")
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such study file{_near_files(path)}") from None
    except IsADirectoryError:
        found = sorted(p.name for p in path.glob("*.yaml"))
        raise ConfigError(f"{source}: is a folder, not a study file"
                          + (f"; study files in it: {', '.join(found)}" if found else "")) from None
    except (PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the study file ({exc.__class__.__name__})") from None
    return parse_study(read_yaml(text, source), source=source, preset=preset)


def read_yaml(text: str, source: str) -> Any:
    """A study's YAML text -> Python values (safe_load semantics; duplicate keys and alias bombs refused)."""
    if len(text) > MAX_STUDY_BYTES:
        raise ConfigError(f"{source}: the study text is {len(text) / 2**20:.1f} MiB; study files are limited "
                          f"to {MAX_STUDY_BYTES // 2**10} KiB")
    try:
        return _safe_load(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply") from None
