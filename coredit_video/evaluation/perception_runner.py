"""The BEVFormer hook: generated key frames -> rewritten nuScenes infos -> BEVFormer (own env) -> boxes + BEV maps.

Steps (W-CODA ``decode_video.py`` + ``test_miou.sh``, one generation ``k`` at a time):

1. :func:`export_generation_frames` decodes frames ``protocol.key_frames`` (0, 6, 12) of every
   ``{token}_gen{k}/{token}_{CAM}.mp4``, undoes the generation crop (:mod:`.geometry`) and saves PNGs as
   ``{out}/gen_samples_{k}/{CAM}/{basename of the real image}.png``. The ``i``-th key frame belongs to the sample
   reached from ``token`` by following ``next`` ``i`` times in the info file (the 2 Hz key-frame infos, e.g. W-CODA's
   ``nuscenes_infos_temporal_val_3keyframes.pkl``).
2. :func:`rewrite_infos` copies those samples' infos and changes only two things: every camera's ``data_path``
   points to the generated PNG and ``scene_token`` becomes ``{scene_token}_gen{k}`` (so BEVFormer's temporal
   queue never mixes generations; W-CODA's fork recognises the suffix). Calibration, ego pose, CAN bus, sweeps,
   ``prev`` / ``next`` and ground truth stay real. The info ``token`` stays the real sample token, so results
   match the real annotations.
3. :class:`BEVFormerRunner` launches the user's BEVFormer checkout as a subprocess with its own Python (never
   importing mmcv / mmdet3d here), by default ``{python} tools/test.py CONFIG CKPT --eval bbox --cfg-options
   data.test.ann_file=INFO``, then reads back the nuScenes results JSON (boxes) and the BEV segmentation output.

Info files are read and written with :mod:`pickle` (the mmcv ``.pkl`` format: ``{"infos": [...], "metadata": ...}``).
"""
from __future__ import annotations

import abc
import ast
import copy
import glob
import json
import os
import pickle
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .geometry import undo_generation_crop
from .protocol import EvalProtocol, w_coda

FrameMap = Dict[str, Dict[str, str]]  # {sample_token: {CAM: image path}}


class PerceptionSetupError(RuntimeError):
    """The perception checkout / checkpoint / python cannot be used as configured."""


class PerceptionRunError(RuntimeError):
    """The perception subprocess failed or produced no readable output."""


# ---------------------------------------------------------------------------------------------------- infos
def load_infos(path: str) -> Dict[str, Any]:
    """Read an mmdet3d info ``.pkl`` (``{"infos": [...], "metadata": {...}}``; a bare list is wrapped)."""
    with open(path, "rb") as f:
        data = pickle.load(f)
    if isinstance(data, list):
        data = {"infos": data, "metadata": {}}
    if not isinstance(data, dict) or "infos" not in data:
        raise ValueError(f"{path}: not an info file (expected a dict with 'infos')")
    return data


def save_infos(data: Mapping[str, Any], path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(dict(data), f, protocol=4)
    return path


def index_infos(data: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {info["token"]: info for info in data["infos"]}


def keyframe_chain(by_token: Mapping[str, Mapping[str, Any]], first_token: str, n: int) -> List[str]:
    """``first_token`` and the next ``n - 1`` samples along ``next``."""
    if first_token not in by_token:
        raise KeyError(f"sample {first_token} is not in the info file")
    chain = [first_token]
    while len(chain) < n:
        nxt = by_token[chain[-1]].get("next", "")
        if not nxt:
            raise ValueError(f"sample {first_token}: the scene ends after {len(chain)} key frame(s), {n} needed")
        if nxt not in by_token:
            raise KeyError(f"sample {nxt} (key frame {len(chain)} after {first_token}) is not in the info file")
        chain.append(nxt)
    return chain


def generation_scene_token(scene_token: str, gen_index: int) -> str:
    return f"{scene_token}_gen{gen_index}"


def rewrite_infos(data: Mapping[str, Any], frame_paths: FrameMap, gen_index: int) -> Dict[str, Any]:
    """Infos of the samples in ``frame_paths`` (in info-file order) with camera paths pointing at the generated
    frames and ``scene_token`` suffixed ``_gen{gen_index}``; everything else is a deep copy of the original."""
    by_token = index_infos(data)
    missing = [t for t in frame_paths if t not in by_token]
    if missing:
        raise KeyError(f"sample(s) {missing[:3]} are not in the info file")
    out_infos = []
    for info in data["infos"]:
        tok = info["token"]
        if tok not in frame_paths:
            continue
        new = copy.deepcopy(info)
        cams = new.get("cams", {})
        for cam, path in frame_paths[tok].items():
            if cam not in cams:
                raise KeyError(f"sample {tok}: the info file has no camera {cam}")
            cams[cam]["data_path"] = os.path.abspath(path)
        lacking = [c for c in cams if c not in frame_paths[tok]]
        if lacking:
            raise KeyError(f"sample {tok}: no generated frame for camera(s) {lacking}")
        new["scene_token"] = generation_scene_token(info["scene_token"], gen_index)
        out_infos.append(new)
    out = {k: copy.deepcopy(v) for k, v in data.items() if k != "infos"}
    out["infos"] = out_infos
    return out


# ---------------------------------------------------------------------------------------------------- frames
def save_image(path: str, rgb: np.ndarray) -> str:
    """Write uint8 RGB ``[H, W, 3]`` (PNG / JPG by extension) with Pillow, OpenCV or imageio."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    try:
        from PIL import Image

        Image.fromarray(rgb).save(path)
        return path
    except ImportError:
        pass
    try:
        import cv2

        if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"OpenCV could not write {path}")
        return path
    except ImportError:
        pass
    try:
        import imageio.v3 as iio

        iio.imwrite(path, rgb)
        return path
    except ImportError:
        raise ImportError("saving frames needs Pillow, opencv-python or imageio") from None


def export_generation_frames(clips: Mapping[str, Mapping[str, str]], data: Mapping[str, Any], gen_index: int,
                             out_dir: str, protocol: Optional[EvalProtocol] = None,
                             reader: Optional[Callable[..., np.ndarray]] = None) -> FrameMap:
    """Save the key frames of one generation (``clips = {token: {CAM: video path}}``) as PNGs at ``target_hw``.

    Returns ``{sample_token: {CAM: png path}}``. Cameras are matched by name; each clip must hold every camera
    of ``protocol.cameras`` and at least ``max(key_frames) + 1`` frames.
    """
    from .video_io import read_video

    p = protocol or w_coda()
    read = reader or read_video
    by_token = index_infos(data)
    root = os.path.join(out_dir, f"gen_samples_{gen_index}")
    frame_paths: FrameMap = {}
    for token in sorted(clips):
        cams = clips[token]
        lacking = [c for c in p.cameras if c not in cams]
        if lacking:
            raise FileNotFoundError(f"token {token} generation {gen_index}: no video for camera(s) {lacking}")
        chain = keyframe_chain(by_token, token, len(p.key_frames))
        for cam in p.cameras:
            frames = read(cams[cam], list(p.key_frames))
            frames = undo_generation_crop(frames, p)
            for sample, frame in zip(chain, frames):
                src = by_token[sample]["cams"][cam]["data_path"]
                name = os.path.splitext(os.path.basename(src))[0] + ".png"
                path = save_image(os.path.join(root, cam, name), frame)
                frame_paths.setdefault(sample, {})[cam] = path
    return frame_paths


@dataclass
class GenerationInputs:
    gen_index: int
    info_path: str
    frames_dir: str
    sample_tokens: List[str]


def prepare_generations(videos_dir: str, info_path: str, out_dir: str, protocol: Optional[EvalProtocol] = None,
                        reader: Optional[Callable[..., np.ndarray]] = None) -> List[GenerationInputs]:
    """For every generation ``k`` in ``videos_dir`` (``gen_video/``): export the key frames and write
    ``{out_dir}/infos_gen{k}.pkl``. Tokens missing from a generation are reported, not silently skipped."""
    from .video_io import find_clips

    p = protocol or w_coda()
    data = load_infos(info_path)
    clips = find_clips(videos_dir, p.cameras)
    gens = sorted({k for per_tok in clips.values() for k in per_tok if k >= 0})
    if p.num_generations is not None:
        if len(gens) < p.num_generations:
            raise FileNotFoundError(f"{videos_dir}: {len(gens)} generation(s) found, num_generations wants "
                                    f"{p.num_generations}")
        gens = gens[:p.num_generations]
    if not gens:
        raise FileNotFoundError(f"{videos_dir}: no {{token}}_gen{{k}} folder")
    out = []
    for k in gens:
        lacking = sorted(t for t, per in clips.items() if k not in per)
        if lacking:
            raise FileNotFoundError(f"generation {k} lacks token(s) {lacking[:5]}{'...' if len(lacking) > 5 else ''}")
        per_gen = {t: per[k] for t, per in clips.items()}
        frames = export_generation_frames(per_gen, data, k, out_dir, p, reader)
        new = rewrite_infos(data, frames, k)
        path = save_infos(new, os.path.join(out_dir, f"infos_gen{k}.pkl"))
        out.append(GenerationInputs(k, path, os.path.join(out_dir, f"gen_samples_{k}"),
                                    [i["token"] for i in new["infos"]]))
    return out


# ---------------------------------------------------------------------------------------------------- runner
@dataclass
class PerceptionOutput:
    """What one perception run produced.

    boxes: ``{sample_token: [nuScenes box dicts]}`` (every sample of the info file, possibly empty lists).
    seg: ``{sample_token: array}`` BEV maps (label map ``[H, W]`` or boolean ``[C, H, W]``) when the run wrote
        per-sample maps; seg_summary: the run's own IoUs (W-CODA ``segmentation_result.json``) when it wrote those.
    """

    boxes: Dict[str, List[Dict[str, Any]]]
    seg: Optional[Dict[str, np.ndarray]] = None
    seg_summary: Optional[Dict[str, float]] = None
    files: Dict[str, str] = field(default_factory=dict)


class PerceptionRunner(abc.ABC):
    """Runs a perception model on an info file whose camera paths point at generated frames."""

    @abc.abstractmethod
    def run(self, info_path: str, work_dir: str, tag: str = "run") -> PerceptionOutput:
        """Evaluate ``info_path``; write anything into ``work_dir``; ``tag`` names this run (e.g. ``gen0``)."""


DEFAULT_COMMAND = ("{python}", "tools/test.py", "{config}", "{checkpoint}", "--eval", "bbox",
                   "--cfg-options", "data.test.ann_file={info}")
DEFAULT_RESULTS_GLOB = "**/results_nusc.json"
DEFAULT_SEG_GLOBS = ("**/bev_seg*.npz", "**/bev_seg*.pkl", "**/segmentation_result.json")
REPO_OUTPUT_DIRS = ("magicdrive-t-log/evaluation", "test", "work_dirs")
"""Folders of the checkout searched recursively for outputs (W-CODA's ``log_root``, BEVFormer's ``test/`` json
prefix, mmdet's ``work_dirs``); the checkout root itself is searched only one level deep (W-CODA's single-GPU
``segmentation_result.json``), never recursively: it usually holds a symlink to the whole nuScenes data."""
_WCODA_SEG_KEYS = {"Divider": "divider", "Pred_Crossing": "ped_crossing", "Ped_Crossing": "ped_crossing",
                   "Boundary": "boundary", "mIoU": "mIoU"}


def read_results_json(path: str) -> Dict[str, List[Dict[str, Any]]]:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise PerceptionRunError(f"{path}: not a nuScenes results file (no 'results' dict)")
    return {k: list(v) for k, v in data["results"].items()}


def read_seg_file(path: str) -> Tuple[Optional[Dict[str, np.ndarray]], Optional[Dict[str, float]]]:
    """``.npz`` / ``.pkl`` of per-sample maps (``{token: array}``, or a list of ``{"token"|"sample_idx", "seg"}``),
    or W-CODA's ``segmentation_result.json`` (JSON lines, last one wins; the single-GPU path writes a Python repr
    inside a JSON string). Returns ``(maps, summary)``, one of them ``None``."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, None
    if ext == ".pkl":
        with open(path, "rb") as f:
            obj = pickle.load(f)
        if isinstance(obj, dict):
            return {str(k): np.asarray(v) for k, v in obj.items()}, None
        maps = {}
        for item in obj:
            tok = item.get("token", item.get("sample_idx"))
            maps[str(tok)] = np.asarray(item.get("seg", item.get("seg_preds")))
        return maps, None
    if ext == ".json":
        with open(path) as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        if not lines:
            raise PerceptionRunError(f"{path} is empty")
        rec = json.loads(lines[-1])
        if isinstance(rec, str):
            rec = ast.literal_eval(rec)
        summary = {_WCODA_SEG_KEYS.get(k, k): float(v) for k, v in rec.items()
                   if k in _WCODA_SEG_KEYS or k in ("divider", "ped_crossing", "boundary")}
        return None, summary
    raise PerceptionRunError(f"{path}: unknown segmentation output type {ext!r}")


class BEVFormerRunner(PerceptionRunner):
    """BEVFormer (W-CODA's seg + det fork, or any mmdet3d-style ``tools/test.py``) in its own environment.

    repo: the BEVFormer checkout (the subprocess's working directory; prepended to its ``PYTHONPATH``).
    config / checkpoint: paths, absolute or relative to ``repo``.
    python: that environment's interpreter (a path or a name on ``PATH``).
    command: argv template (a list, or a string split with ``shlex``) with ``{python}``, ``{repo}``, ``{config}``,
        ``{checkpoint}``, ``{info}``, ``{work_dir}``, ``{tag}`` placeholders; default :data:`DEFAULT_COMMAND`.
    env: extra environment variables. The run also gets ``COREDIT_EVAL_INFO`` and ``COREDIT_EVAL_WORK_DIR`` (a
        patched test script can write its BEV maps there).
    results_glob / seg_globs: the output files looked for, under ``work_dir`` and :data:`REPO_OUTPUT_DIRS` of
        the checkout (or ``search_dirs``); only files written by this run (newer than its start) count, the newest
        wins. To pin the location, pass the json prefix in the command, e.g. W-CODA's ``--log_part {tag}`` or
        ``--eval-options jsonfile_prefix={work_dir}`` where the test script supports it.
    require_seg: fail when no segmentation output is found (default: boxes only is fine).
    """

    def __init__(self, repo: str, config: str, checkpoint: str, python: str = "python",
                 command: Optional[Sequence[str]] = None, env: Optional[Mapping[str, str]] = None,
                 timeout: Optional[float] = None, results_glob: str = DEFAULT_RESULTS_GLOB,
                 seg_globs: Sequence[str] = DEFAULT_SEG_GLOBS, search_dirs: Optional[Sequence[str]] = None,
                 require_seg: bool = False):
        if not repo or not os.path.isdir(repo):
            raise PerceptionSetupError(f"BEVFormer checkout not found at {repo!r} (set repo= to its root folder)")
        self.repo = os.path.abspath(repo)
        self.config = self._existing(config, "config")
        self.checkpoint = self._existing(checkpoint, "checkpoint")
        if os.path.sep in python:
            resolved = os.path.abspath(python) if os.access(python, os.X_OK) and os.path.isfile(python) else None
        else:
            resolved = shutil.which(python)
        if resolved is None:
            raise PerceptionSetupError(f"python executable {python!r} for BEVFormer not found "
                                       f"(give the interpreter of the environment BEVFormer is installed in)")
        self.python = resolved
        if command is None:
            self.command = list(DEFAULT_COMMAND)
        elif isinstance(command, str):
            self.command = shlex.split(command)
        else:
            self.command = [str(c) for c in command]
        if not self.command:
            raise PerceptionSetupError("command must not be empty")
        self.env = dict(env or {})
        self.timeout = timeout
        self.results_glob = results_glob
        self.seg_globs = tuple(seg_globs)
        self.search_dirs = list(search_dirs) if search_dirs is not None else None
        self.require_seg = require_seg

    def _existing(self, path: str, what: str) -> str:
        if not path:
            raise PerceptionSetupError(f"no BEVFormer {what} given")
        cand = path if os.path.isabs(path) else os.path.join(self.repo, path)
        if not os.path.exists(cand) and os.path.exists(path):
            cand = path
        if not os.path.exists(cand):
            raise PerceptionSetupError(f"BEVFormer {what} not found: {path} (looked at {cand})")
        return os.path.abspath(cand)

    def build_command(self, info_path: str, work_dir: str, tag: str) -> List[str]:
        values = dict(python=self.python, repo=self.repo, config=self.config, checkpoint=self.checkpoint,
                      info=os.path.abspath(info_path), work_dir=os.path.abspath(work_dir), tag=tag)
        try:
            return [part.format(**values) for part in self.command]
        except (KeyError, IndexError) as e:
            raise PerceptionSetupError(f"command template has an unknown placeholder {e}; "
                                       f"known: {sorted(values)}") from None

    def build_env(self, info_path: str, work_dir: str) -> Dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = self.repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["COREDIT_EVAL_INFO"] = os.path.abspath(info_path)
        env["COREDIT_EVAL_WORK_DIR"] = os.path.abspath(work_dir)
        env.update(self.env)
        return env

    def _roots(self, work_dir: str) -> List[Tuple[str, bool]]:
        if self.search_dirs is not None:
            return [(d, True) for d in self.search_dirs]
        roots = [(work_dir, True)] + [(os.path.join(self.repo, d), True) for d in REPO_OUTPUT_DIRS]
        return roots + [(self.repo, False)]

    def _find(self, pattern: str, since: float, work_dir: str) -> Optional[str]:
        found = []
        for root, recursive in self._roots(work_dir):
            if not os.path.isdir(root):
                continue
            pat = pattern if recursive else os.path.basename(pattern)
            for path in glob.glob(os.path.join(root, pat), recursive=recursive):
                try:
                    mtime = os.path.getmtime(path)
                except OSError:
                    continue
                if mtime >= since and os.path.isfile(path):
                    found.append((mtime, path))
        return max(found)[1] if found else None

    def run(self, info_path: str, work_dir: str, tag: str = "run") -> PerceptionOutput:
        if not os.path.isfile(info_path):
            raise FileNotFoundError(f"no info file at {info_path}")
        os.makedirs(work_dir, exist_ok=True)
        argv = self.build_command(info_path, work_dir, tag)
        log_path = os.path.join(work_dir, f"{tag}.log")
        start = time.time() - 1.0  # file systems with coarse mtimes
        with open(log_path, "w") as log:
            log.write("$ " + " ".join(shlex.quote(a) for a in argv) + "\n")
            log.flush()
            try:
                proc = subprocess.run(argv, cwd=self.repo, env=self.build_env(info_path, work_dir), stdout=log,
                                      stderr=subprocess.STDOUT, timeout=self.timeout, check=False)
            except subprocess.TimeoutExpired:
                raise PerceptionRunError(f"BEVFormer run {tag} exceeded {self.timeout} s; log: {log_path}") from None
            except OSError as e:
                raise PerceptionRunError(f"could not launch {argv[0]}: {e}") from e
        if proc.returncode != 0:
            with open(log_path) as f:
                tail = "".join(f.readlines()[-20:])
            raise PerceptionRunError(f"BEVFormer run {tag} exited with {proc.returncode}; log {log_path}:\n{tail}")
        res_path = self._find(self.results_glob, start, work_dir)
        if res_path is None:
            raise PerceptionRunError(f"BEVFormer run {tag} wrote no {self.results_glob} under "
                                     f"{[r for r, _ in self._roots(work_dir)]}; log: {log_path}")
        out = PerceptionOutput(boxes=read_results_json(res_path), files={"results": res_path, "log": log_path})
        for pattern in self.seg_globs:
            seg_path = self._find(pattern, start, work_dir)
            if seg_path is None:
                continue
            maps, summary = read_seg_file(seg_path)
            if maps is not None and out.seg is None:
                out.seg, out.files["seg"] = maps, seg_path
            if summary is not None and out.seg_summary is None:
                out.seg_summary, out.files["seg_summary"] = summary, seg_path
        if self.require_seg and out.seg is None and out.seg_summary is None:
            raise PerceptionRunError(f"BEVFormer run {tag} wrote no segmentation output {self.seg_globs}")
        # every sample of the info file is scored, with an empty list when the model found nothing
        for info in load_infos(info_path)["infos"]:
            out.boxes.setdefault(info["token"], [])
        return out
