"""Training engine shared by every domain: one loop, run folders, checkpoints, configs, distributed."""

from .checkpoint import CheckpointError, find_resumable, load_trainer_state, load_weights, save_weights
from .config import (
    ConfigError,
    config_to_dict,
    dump_config,
    load_bundled_config,
    load_config,
    parse_overrides,
    resolve_config_path,
)
from .distributed import DistContext, init_distributed
from .schedules import LRSchedule, ScheduleConfig
from .seeding import seed_everything
from .task import TaskHooks, TrainTask, mean_metrics, move_to_device
from .trainer import FitResult, ModelEMA, OptimConfig, TrainConfig, build_optimizer, fit

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DistContext",
    "FitResult",
    "LRSchedule",
    "ModelEMA",
    "OptimConfig",
    "ScheduleConfig",
    "TaskHooks",
    "TrainConfig",
    "TrainTask",
    "build_optimizer",
    "config_to_dict",
    "dump_config",
    "find_resumable",
    "fit",
    "init_distributed",
    "load_bundled_config",
    "load_config",
    "resolve_config_path",
    "load_trainer_state",
    "load_weights",
    "mean_metrics",
    "move_to_device",
    "parse_overrides",
    "save_weights",
    "seed_everything",
]
