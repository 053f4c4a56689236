"""torchrun worker: run the trainer from a config with ``key=python-literal`` overrides; every rank
writes its final schedule and the local (pre-all-reduce) statistics it saw to ``<out>.rank<r>.json``."""
import ast
import json
import os
import sys

from mmengine.config import Config

from coredit_video.schedule import ProgressiveSchedule
from coredit_video.training.config import build_train_config
from coredit_video.training.trainer import train

LOCAL = []
_step = ProgressiveSchedule.step


def _recording_step(self, all_reduce=None):
    if not self.state.done and (self.state.step + 1) % self.cfg.interval == 0:
        LOCAL.append(list(self.state.sums))
    return _step(self, all_reduce)


def main(config: str, out: str, *overrides: str) -> None:
    ProgressiveSchedule.step = _recording_step
    cfg = Config.fromfile(config)
    cfg.merge_from_dict({k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in overrides)})
    summary = train(build_train_config(cfg))
    with open(f"{out}.rank{os.environ.get('RANK', '0')}.json", "w") as f:
        json.dump(dict(ratios=summary["ratios"], mean_ratio=summary["mean_ratio"], local_sums=LOCAL,
                       decisions=summary["decisions"] if isinstance(summary["decisions"], int) else None), f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *sys.argv[3:])
