"""dlcli: train, evaluate and use deep-learning models from YAML files, from the command line or from Python.

    import dlcli
    run = dlcli.train("configs/table_regression.yaml")
    run.evaluate(); run.predict(rows)

The API (dlcli.api) is imported on first use, so `import dlcli` stays light: no torch until a function needs it.
"""

__version__ = "0.1.0"

_API = {"load", "Run", "parse_config"}  # and train, runs: see _CallableModule
_ERRORS = {"DlcliError", "ConfigError", "DataError", "TrainingInterrupted"}
__all__ = sorted(_API | _ERRORS | {"train", "runs"})


class _CallableModule(type(__import__("sys"))):
    """`dlcli.train` and `dlcli.runs` are modules the package uses (`from dlcli import runs`) and, called, the API's
    functions: Python binds a package's submodule to the attribute of its name whenever it is imported, so a plain
    function of that name would be replaced by the module at the first internal import."""

    def __call__(self, *args, **kwargs):
        from dlcli import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


def _callable(module_name: str) -> None:
    import sys

    sys.modules[module_name].__class__ = _CallableModule


def __getattr__(name):
    if name in ("train", "runs"):  # the submodule, made callable when it was imported
        import importlib

        return importlib.import_module(f"dlcli.{name}")
    if name in _API:
        from dlcli import api

        return getattr(api, name)
    if name in _ERRORS:
        from dlcli import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'dlcli' has no attribute {name!r}")
