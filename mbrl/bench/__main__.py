"""`python -m mbrl.bench <name> [options]` runs the benchmark module mbrl/bench/<name>.py."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import mbrl.bench as pkg

_NOT_BENCHMARKS = {"peers", "common"}


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_") and m.name not in _NOT_BENCHMARKS)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m mbrl.bench {{{','.join(names)}}} [options]")
        return 0 if argv else 2
    name = argv[0]
    if name not in names:
        print(f"error: unknown benchmark {name!r}; valid: {', '.join(names)}", file=sys.stderr)
        return 2
    from mbrl.utils.memory import keep_freed_memory

    keep_freed_memory()  # as `python -m mbrl.train` runs
    mod = importlib.import_module(f"mbrl.bench.{name}")
    parser = argparse.ArgumentParser(prog=f"python -m mbrl.bench {name}", description=(mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else None)
    mod.add_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing results/ files (default: refuse them)")
    args = parser.parse_args(argv[1:])
    from mbrl.bench import common
    from mbrl.errors import UserError

    common.OVERWRITE = bool(args.overwrite)
    try:
        return int(mod.run(args) or 0)
    except UserError as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
