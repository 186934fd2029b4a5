"""bcgc-sim: block coordinate gradient coding, predicted and measured.

    import bcgc_sim as bcgc
    cfg = bcgc.load_config("configs/paper.toml", {"cluster.workers": 10})
    bcgc.plan(cfg, "bcgc-opt"); bcgc.predict(cfg); run = bcgc.run(cfg, output="out")
    bcgc.load_run("out")

The public API (load_config, plan, predict, run, load_run and their result types) lives in
bcgc_sim.entry.api and is imported on first use, so that `import bcgc_sim` stays cheap.

The library, with no processes and no sockets of its own: model/ (the runtime model), partial/
(the partial-straggler model), wire/ (the protocol and how both ends move its frames), paper/
(the papers' numbers and their reproduction), and at the top the scheme registry (schemes),
config, problems, results, prediction, validation, comparison, intervals, sweep_summary, and the
figures (plots, in the look of style). entry/ is the entry layer (the `bcgc` command and the
API): it alone composes master/, workers/ and the library, and nothing in the library imports
it at import time.
"""

__version__ = "0.1.0"

API = ("load_config", "plan", "predict", "run", "load_run", "SchemePlan", "Predictions", "Run")


def __getattr__(name: str):
    if name in API:
        from .entry import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
