"""User code that registers ops, spaces, datasets and parts: `--import` and entry points.

A plugin is any Python module (an importable name, or the path of a .py file) whose import
registers things in diffnas's registries (`SPACES`, `DATASETS`, `RELAXATIONS`, ... and new
ops through `space_with_ops`). The CLI imports the modules named by `--import MODULE`
and every module of the `diffnas.plugins` entry-point group of installed packages. A run
directory's config.yaml records the imports (key `imports`), so that `diffnas derive/train/
export RUN` can say which plugins the run needs; a file never makes diffnas import code: the
plugins a config or run names must be given again (`--import`, `diffnas.plugins.load`) or be
installed entry points, else the command stops with an error naming them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from diffnas.errors import ConfigError

ENTRY_POINT_GROUP = "diffnas.plugins"

_loaded: dict[str, ModuleType] = {}  # spec (module name or resolved .py path) -> module
_entry_points_loaded = False


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def canonical(spec: str) -> str:
    """A module name as given; a .py path made absolute (a run may be reopened elsewhere)."""
    return str(Path(spec).expanduser().resolve()) if _is_path(spec) else spec


def _fail(spec: str, exc: BaseException, hint: str) -> ConfigError:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return ConfigError(f"cannot import the plugin '{spec}' ({last}); {hint}")


def load(spec: str, hint: str | None = None) -> ModuleType:
    """Import one plugin (module name or .py path) once; a clear error when it fails."""
    key = canonical(spec)
    if key in _loaded:
        return _loaded[key]
    hint = hint or (
        "check the path of the .py file"
        if _is_path(spec)
        else "install it, add its folder to PYTHONPATH, or pass the path of its .py file"
    )
    try:
        if _is_path(spec):
            path = Path(key)
            if not path.is_file():
                raise FileNotFoundError(f"no file {path}")
            name = f"diffnas_plugin_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(f"{path} is not a Python module")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        else:
            module = importlib.import_module(spec)
    except Exception as exc:  # the plugin's own error, named with the plugin
        raise _fail(spec, exc, hint) from exc
    _loaded[key] = module
    return module


def load_all(specs: Iterable[str], hint: str | None = None) -> None:
    for spec in specs:
        load(spec, hint)


def loaded() -> list[str]:
    """The plugins imported so far through `load` (canonical specs, in import order)."""
    return list(_loaded)


def load_entry_points() -> None:
    """Import every module of installed packages' `diffnas.plugins` entry points, once."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:
            raise ConfigError(
                f"the diffnas plugin '{ep.name}' ({ep.value}, entry point group "
                f"{ENTRY_POINT_GROUP}) failed to import: {exc}; fix or uninstall its package"
            ) from exc


def require(specs: Iterable[str], where: str) -> None:
    """Check that the plugins a file names (a config's or a run's `imports`) are loaded.

    Reading a config or run directory never imports code: a plugin it names must have been
    imported by the user (`--import`, `diffnas.plugins.load`, a plain `import` of a module
    name, or an installed entry point); otherwise a ConfigError names the plugin and the fix.
    """
    missing = []
    for spec in specs:
        key = canonical(spec)
        if key in _loaded or (not _is_path(spec) and spec in sys.modules):
            continue
        missing.append(spec)
    if missing:
        flags = " ".join(f"--import {m}" for m in missing)
        raise ConfigError(
            f"{where} names the plugin{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)}; diffnas does not import code that a file "
            f"names: if you trust it, pass {flags} (from Python: diffnas.plugins.load(...) first)"
        )


def load_for_run(path: str | Path) -> None:
    """Check that the plugins a run directory's config.yaml records are loaded (`require`)."""
    import yaml

    config = Path(path) / "config.yaml"
    if not config.is_file():
        return
    try:
        data = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError:
        return  # reported by whoever parses the config
    imports = data.get("imports") if isinstance(data, dict) else None
    if isinstance(imports, list) and imports:
        require([str(i) for i in imports], f"the run '{path}' (its config.yaml)")


def with_imports(config: Any) -> Any:
    """`config` with the plugins loaded so far added to its `imports` (to record in a run)."""
    import dataclasses

    if not dataclasses.is_dataclass(config) or not hasattr(config, "imports"):
        return config
    merged = list(dict.fromkeys([*(canonical(s) for s in config.imports), *loaded()]))
    return dataclasses.replace(config, imports=merged)  # type: ignore[type-var]


def extract_imports(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the values of every `--import X` / `--import=X` in argv, argv without them)."""
    imports, rest = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--import":
            if i + 1 >= len(argv):
                raise ConfigError("--import needs a module name or a .py path")
            imports.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--import="):
            imports.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return imports, rest


# =========================================================================== user ops
def op(
    name: str,
    build: Callable[[int, int, bool, bool], Any],
    *,
    params: Callable[[int, int], int] | None = None,
    macs: Callable[[int, int, int, int], int] | None = None,
    parameter_free: bool | None = None,
) -> Any:
    """An op definition for a cell space: build(C, stride, affine, search) -> nn.Module.

    The module maps [N, C, H, W] to [N, C, H/stride, W/stride]. `params(C, stride)` defaults
    to counting the parameters of the module built for a discrete network; `macs` has no
    default (parts that need multiply-adds refuse the op with a clear error).
    """
    from diffnas.spaces.ops import OpDef

    def counted(c: int, s: int) -> int:
        return sum(p.numel() for p in build(c, s, True, False).parameters())

    def no_macs(c: int, s: int, h: int, w: int) -> int:
        raise ConfigError(
            f"the user op '{name}' has no multiply-add count; pass macs= to diffnas.plugins.op, "
            f"or use the 'params' metric"
        )

    count = params or counted
    free = parameter_free if parameter_free is not None else count(4, 1) == 0
    return OpDef(name, build, count, macs or no_macs, free)


def space_with_ops(name: str, ops: list[Any], base: str = "darts") -> type:
    """Register a space `name`: the built-in `base` space (darts or nb201) plus `ops`.

    Its supernet, derivation, genotype checks and discrete networks use the extended op
    table, so a run of the new space can be derived, trained and exported like `base`.
    """
    from diffnas.registry import SPACES

    parent = SPACES.get(base)
    if name in SPACES:
        existing = SPACES.get(name)
        if getattr(existing, "_plugin_ops", None) == [o.name for o in ops]:
            return existing  # the same plugin imported twice
        raise ConfigError(f"a space named '{name}' is already registered")
    table = parent.op_table.extended(name, ops)
    cls = type(
        f"{parent.__name__}_{name}",
        (parent,),
        {"name": name, "op_table": table, "_plugin_ops": [o.name for o in ops]},
    )
    SPACES.add(name, cls)
    return cls
