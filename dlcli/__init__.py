"""dlcli: train, evaluate and use deep-learning models from YAML files, from the command line or from Python.

    import dlcli
    run = dlcli.train("configs/table_regression.yaml")
    run.evaluate(); run.predict(rows)

The API (dlcli.api) is imported on first use, so `import dlcli` stays light: no torch until a function needs it.
"""

__version__ = "0.1.0"

_API = {"train", "load", "runs", "Run", "parse_config"}
_ERRORS = {"DlcliError", "ConfigError", "DataError", "TrainingInterrupted"}
__all__ = sorted(_API | _ERRORS)


def __getattr__(name):
    if name in _API:
        from dlcli import api

        return getattr(api, name)
    if name in _ERRORS:
        from dlcli import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'dlcli' has no attribute {name!r}")
