"""Train, evaluate, profile and export the discrete networks of searched genotypes.

The second half of the job: `train` a genotype with the DARTS evaluation recipe, test it
(`evaluate_run`), count and time it (`profile`), and deploy it (`export_spec`).
"""

from diffnas.retrain.accuracy import EvalResult, evaluate_run
from diffnas.retrain.config import TrainConfig, load_train_config
from diffnas.retrain.export import ExportResult, export_model, export_spec
from diffnas.retrain.network import ModelSpec, build_model, load_trained, resolve_model
from diffnas.retrain.profile import ProfileResult, count_macs, count_params, profile
from diffnas.retrain.train import Trainer, TrainResult, resume_training, train

__all__ = [
    "EvalResult",
    "ExportResult",
    "ModelSpec",
    "ProfileResult",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_model",
    "count_macs",
    "count_params",
    "evaluate_run",
    "export_model",
    "export_spec",
    "load_train_config",
    "load_trained",
    "profile",
    "resolve_model",
    "resume_training",
    "train",
]
