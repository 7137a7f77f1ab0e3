"""Helpers for the Snakemake workflow (``workflow/rules/*.smk``) that need no Snakemake import.

``package_sources(script)``
    the files of this package a rule's script runs: the ``panel2patch`` modules it imports,
    followed through their own imports (relative or absolute, at top level or inside functions),
    every parent package's ``__init__.py``, and the data files (``weights/``, ``configs/``) of
    those packages. Given as a rule's inputs, an edit to the library reruns exactly the rules
    whose code changed (Snakemake's mtime trigger), and an edit to e.g. ``layout/letters.py``
    leaves the ingest and text rules alone. Found by reading the source (``ast``), nothing is
    imported.

``code_stamp(script, folder)``
    those files as ONE input: ``folder/<script>.sha256`` lists the sha256 of each of them, and is
    rewritten only when that content changes, so its mtime moves exactly when the code does (the
    pattern of the shard manifests, ``panel2patch.ingest.shards.write_manifests``). A rule job then
    has one code input instead of tens (Snakemake stats and records each input of each job: most
    of the DAG's time at 6000 jobs), with the same reruns.

``coerce_overrides(config, overrides, schema)``
    ``snakemake --config 'layout={max_side: 900}'`` parses nested values with YAML's
    BaseLoader, so every scalar below the top level is a string ("900"). Where the schema wants
    an integer, number, boolean or null there, the string is read as YAML (safe loader) and kept
    when it gives such a value; values from the config file are left alone. Snakemake has already
    merged the overrides into the config file's values (dicts key by key), and ``validate`` then
    fills the schema's defaults for keys missing from both.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import os
from pathlib import Path

import yaml

PACKAGE = "panel2patch"
DATA_DIRS = ("weights", "configs")
DATA_SUFFIXES = (".pt", ".json")


@functools.lru_cache(maxsize=1)
def _package_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # imports only panel2patch/__init__.py (no dependencies)
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _module_file(name: str) -> Path | None:
    """``panel2patch.a.b`` -> its ``.py`` file (a module or a package's ``__init__.py``), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = _package_dir().joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> tuple[str, bool]:
    """(dotted name, is a package) of a file under the package."""
    rel = path.relative_to(_package_dir().parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


@functools.lru_cache(maxsize=None)
def _imports(path: Path, name: str | None, is_package: bool) -> frozenset[str]:
    """Dotted names of the modules ``path`` imports (for ``from X import y``: X and X.y); each
    file is parsed once per process, not once per rule (a third of the DAG build's fixed cost)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = (name if is_package else name.rpartition(".")[0]) if name else ""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if not package:
                    continue
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return frozenset(found)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def package_sources(script: str | os.PathLike, *modules: str) -> list[str]:
    """Sorted paths (relative to the working directory when under it) of the package files that
    ``script`` runs, plus ``modules`` (dotted names of modules it starts in another process, e.g.
    ``panel2patch.train.main`` under torchrun) with theirs; see the module docstring."""
    cwd = Path.cwd().resolve()
    return sorted(str(f.relative_to(cwd)) if f.is_relative_to(cwd) else str(f) for f in _source_files(script, *modules))


@functools.lru_cache(maxsize=None)
def _source_files(script: str | os.PathLike, *modules: str) -> frozenset[Path]:
    """The absolute paths of :func:`package_sources`."""
    seen: dict[str, Path] = {}
    todo = [(Path(script), None, False)]
    for mod in modules:
        f = _module_file(mod)
        if f is None:
            raise ValueError(f"no module {mod} in {_package_dir()}")
        seen[mod] = f
        todo.append((f, *_module_name(f)))
    while todo:
        path, name, is_package = todo.pop()
        for dotted in _imports(path, name, is_package):
            for mod in [*_parents(dotted), dotted]:
                if mod in seen:
                    continue
                f = _module_file(mod)
                if f is None:
                    continue
                seen[mod] = f
                todo.append((f, *_module_name(f)))
    files = set(seen.values())
    for f in list(files):
        if f.name == "__init__.py":
            for d in DATA_DIRS:
                files.update(p for p in (f.parent / d).glob("*") if p.suffix in DATA_SUFFIXES and p.is_file())
    return frozenset(files)


def code_stamp(script: str | os.PathLike, folder: str | os.PathLike, *modules: str) -> str:
    """Write ``folder/<script stem>[+<module>...].sha256`` (see the module docstring) when its
    content changed, atomically; return its path. Each line is ``<sha256>  <path under src/>``
    of a file of :func:`package_sources`, so the stamp does not depend on where the checkout is."""
    root = _package_dir().parent
    files = sorted((f.relative_to(root).as_posix(), f) for f in _source_files(script, *modules))
    text = "".join(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {rel}\n" for rel, f in files)
    path = Path(folder) / ("+".join([Path(script).stem, *modules]) + ".sha256")
    try:
        same = path.read_text() == text
    except OSError:
        same = False
    if not same:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return str(path)


# --------------------------------------------------------------------------------- --config
_TYPES = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def _allowed(schema: dict) -> set[str]:
    t = schema.get("type", [])
    return {t} if isinstance(t, str) else set(t)


def _coerce(value, schema: dict):
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _coerce(v, props.get(k, {})) for k, v in value.items()}
    if isinstance(value, list):
        return [_coerce(v, schema.get("items", {})) for v in value]
    if not isinstance(value, str):
        return value
    allowed = _allowed(schema)
    wanted = [_TYPES[t] for t in allowed if t in _TYPES]
    if not wanted:
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if isinstance(parsed, bool) and "boolean" not in allowed:
        return value
    if isinstance(parsed, tuple(t for w in wanted for t in (w if isinstance(w, tuple) else (w,)))):
        if isinstance(parsed, int) and not isinstance(parsed, bool) and "integer" not in allowed:
            return float(parsed)
        return parsed
    return value


def _apply(config: dict, overrides: dict, schema: dict) -> None:
    props = schema.get("properties", {})
    for key, over in overrides.items():
        if key not in config:
            continue
        sub = props.get(key, {})
        if isinstance(over, dict) and isinstance(config[key], dict):
            _apply(config[key], over, sub)
        else:
            config[key] = _coerce(config[key], sub)


def coerce_overrides(config: dict, overrides: dict | None, schema: str | os.PathLike | dict) -> dict:
    """Type the string scalars ``--config`` put into ``config`` where ``schema`` asks for
    integer/number/boolean/null (in place; returns ``config``). Only keys in ``overrides``
    (Snakemake's ``workflow.config_settings.overwrite_config``) are touched."""
    if not overrides:
        return config
    if not isinstance(schema, dict):
        schema = yaml.safe_load(Path(schema).read_text())
    _apply(config, overrides, schema)
    return config
