"""dlcli: train, evaluate and use deep-learning models from YAML files."""

__version__ = "0.1.0"
