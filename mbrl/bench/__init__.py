"""Speed benchmarks, side by side with peer libraries: `python -m mbrl.bench <name> [options]`.

Each benchmark is a module `mbrl/bench/<name>.py` with `add_arguments(parser)` and `run(args)`;
results (markdown tables, with command, machine and date) are written under `results/`.
"""
