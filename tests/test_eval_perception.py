"""Info rewriting, key-frame export and the BEVFormer hook driven end to end by a fake ``tools/test.py``."""
import copy
import json
import os
import pickle
import sys
import textwrap

import numpy as np
import pytest

from coredit_video.evaluation import w_coda
from coredit_video.evaluation.perception_runner import (
    BEVFormerRunner,
    PerceptionRunError,
    PerceptionSetupError,
    export_generation_frames,
    keyframe_chain,
    load_infos,
    prepare_generations,
    read_seg_file,
    rewrite_infos,
    save_infos,
)

CAMS = ("CAM_FRONT", "CAM_BACK")
P = w_coda(target_hw=(90, 160), generation_hw=(42, 80), key_frames=(0, 2, 4), cameras=CAMS, fvd_allow_padding=True)


def _infos():
    """Two scenes of four key frames each, mmdet3d-style infos with numpy arrays inside."""
    infos = []
    for s in ("sceneA", "sceneB"):
        toks = [f"{s}_s{i}" for i in range(4)]
        for i, tok in enumerate(toks):
            infos.append({
                "token": tok, "scene_token": s, "timestamp": 1000 * i,
                "prev": toks[i - 1] if i else "", "next": toks[i + 1] if i < 3 else "",
                "lidar_path": f"/data/nuscenes/samples/LIDAR_TOP/{tok}.bin",
                "cams": {cam: {"data_path": f"/data/nuscenes/samples/{cam}/n008__{cam}__{tok}.jpg",
                               "cam_intrinsic": np.eye(3) * (i + 1), "sensor2lidar_rotation": np.eye(3),
                               "sensor2lidar_translation": np.array([0.1, 0.2, i])} for cam in CAMS},
                "can_bus": np.arange(18, dtype=float) + i, "ego2global_translation": [i, 2.0, 0.0],
                "ego2global_rotation": [1, 0, 0, 0], "gt_boxes": np.ones((3, 7)) * i,
                "gt_names": np.array(["car", "pedestrian", "barrier"]), "sweeps": [{"data_path": "x"}],
            })
    return {"infos": infos, "metadata": {"version": "v1.0-trainval"}}


def _equal(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_keyframe_chain():
    by = {i["token"]: i for i in _infos()["infos"]}
    assert keyframe_chain(by, "sceneA_s0", 3) == ["sceneA_s0", "sceneA_s1", "sceneA_s2"]
    with pytest.raises(ValueError, match="scene ends"):
        keyframe_chain(by, "sceneA_s2", 3)


def test_rewrite_infos_changes_only_paths_and_scene_token():
    data = _infos()
    original = copy.deepcopy(data)
    frames = {f"sceneA_s{i}": {cam: f"/gen/gen_samples_1/{cam}/img{i}.png" for cam in CAMS} for i in range(3)}
    new = rewrite_infos(data, frames, gen_index=1)
    assert _equal(data, original)  # the input is not modified
    assert [i["token"] for i in new["infos"]] == ["sceneA_s0", "sceneA_s1", "sceneA_s2"]
    assert new["metadata"] == original["metadata"]
    for info in new["infos"]:
        old = next(o for o in original["infos"] if o["token"] == info["token"])
        assert info["scene_token"] == "sceneA_gen1"
        for cam in CAMS:
            assert info["cams"][cam]["data_path"] == frames[info["token"]][cam]
            rest_new = {k: v for k, v in info["cams"][cam].items() if k != "data_path"}
            rest_old = {k: v for k, v in old["cams"][cam].items() if k != "data_path"}
            assert _equal(rest_new, rest_old)  # calibration unchanged
        for key in old:
            if key not in ("cams", "scene_token"):
                assert _equal(info[key], old[key]), key  # ego pose, CAN bus, GT, prev/next, sweeps unchanged
    with pytest.raises(KeyError, match="no generated frame"):
        rewrite_infos(data, {"sceneA_s0": {"CAM_FRONT": "x.png"}}, 0)
    with pytest.raises(KeyError, match="not in the info file"):
        rewrite_infos(data, {"nope": {}}, 0)


def _fake_reader(value_of):
    def read(path, indices):
        v = value_of(path)
        frames = np.zeros((len(indices), 42, 80, 3), np.uint8)
        for j, i in enumerate(indices):
            frames[j] = (v + 10 * i) % 256
        return frames
    return read


def _make_gen_tree(root, gens=(0, 1)):
    for tok in ("sceneA_s0", "sceneB_s0"):
        for k in gens:
            d = os.path.join(root, f"{tok}_gen{k}")
            os.makedirs(d, exist_ok=True)
            for cam in CAMS:
                open(os.path.join(d, f"{tok}_{cam}.mp4"), "w").close()


def test_export_and_prepare_generations(tmp_path):
    data = _infos()
    info_path = save_infos(data, str(tmp_path / "infos.pkl"))
    videos = str(tmp_path / "gen_video")
    _make_gen_tree(videos)
    value = {"CAM_FRONT": 40, "CAM_BACK": 90}
    reader = _fake_reader(lambda path: value["CAM_" + os.path.basename(path)[:-4].split("_CAM_")[1]] +
                          (5 if "_gen1" in path else 0))
    out = prepare_generations(videos, info_path, str(tmp_path / "prepared"), P, reader=reader)
    assert [g.gen_index for g in out] == [0, 1]
    g1 = out[1]
    new = load_infos(g1.info_path)
    assert sorted(g1.sample_tokens) == sorted(f"{s}_s{i}" for s in ("sceneA", "sceneB") for i in range(3))
    for info in new["infos"]:
        assert info["scene_token"].endswith("_gen1")
        i = int(info["token"][-1])
        for cam in CAMS:
            path = info["cams"][cam]["data_path"]
            assert path.startswith(os.path.join(str(tmp_path / "prepared"), "gen_samples_1", cam))
            assert os.path.basename(path) == f"n008__{cam}__{info['token']}.png"  # real name, .png
            from PIL import Image

            img = np.asarray(Image.open(path))
            assert img.shape == (90, 160, 3)
            assert np.all(img[:6] == 128)  # 42x80 -> 84x160 + 6 padded rows at the top
            # key frame i of the clip is clip frame key_frames[i] (0, 2, 4): value + 10 * frame + gen offset
            assert np.all(img[6:] == value[cam] + 5 + 10 * P.key_frames[i])


def test_export_requires_every_camera(tmp_path):
    data = _infos()
    with pytest.raises(FileNotFoundError, match="CAM_BACK"):
        export_generation_frames({"sceneA_s0": {"CAM_FRONT": "x.mp4"}}, data, 0, str(tmp_path), P,
                                 reader=_fake_reader(lambda p: 0))


FAKE_TEST_PY = textwrap.dedent('''
    """Fake BEVFormer tools/test.py: records what it was given, writes W-CODA-shaped outputs."""
    import json, os, pickle, sys
    import numpy as np

    work = os.environ["COREDIT_EVAL_WORK_DIR"]
    cfg_opts = sys.argv[sys.argv.index("--cfg-options") + 1:]
    info_path = [o.split("=", 1)[1] for o in cfg_opts if o.startswith("data.test.ann_file=")][0]
    with open(info_path, "rb") as f:
        data = pickle.load(f)
    record = {
        "argv": sys.argv, "cwd": os.getcwd(), "pythonpath": os.environ.get("PYTHONPATH", ""),
        "env_info": os.environ["COREDIT_EVAL_INFO"], "extra_env": os.environ.get("FAKE_FLAG"),
        "tokens": [i["token"] for i in data["infos"]], "scenes": [i["scene_token"] for i in data["infos"]],
        "paths": [i["cams"]["CAM_FRONT"]["data_path"] for i in data["infos"]],
        "mmcv_imported": "mmcv" in sys.modules,
    }
    with open(os.path.join(work, "record.json"), "w") as f:
        json.dump(record, f)
    if os.environ.get("FAKE_FAIL"):
        print("CUDA out of memory (fake)")
        sys.exit(3)
    if os.environ.get("FAKE_NO_OUTPUT"):
        sys.exit(0)
    first = data["infos"][0]["token"]
    results = {first: [{"sample_token": first, "translation": [1.0, 2.0, 0.5], "size": [2, 4, 1.5],
                        "rotation": [1, 0, 0, 0], "velocity": [0, 0], "detection_name": "car",
                        "detection_score": 0.8, "attribute_name": "vehicle.parked"}]}
    out_root = os.path.join("test", "seg_det", "Mon_Jan_1") if os.environ.get("FAKE_REPO_OUT") else work
    os.makedirs(os.path.join(out_root, "pts_bbox"), exist_ok=True)
    with open(os.path.join(out_root, "pts_bbox", "results_nusc.json"), "w") as f:
        json.dump({"meta": {"use_camera": True}, "results": results}, f)
    maps = {i["token"]: np.full((4, 6), n % 4, dtype=np.int64) for n, i in enumerate(data["infos"])}
    np.savez(os.path.join(work, "bev_seg_pred.npz"), **maps)
    seg = dict(Validation_num=len(data["infos"]), Divider=0.5, Pred_Crossing=0.25, Boundary=0.125, mIoU=0.2917)
    with open(os.path.join(work, "segmentation_result.json"), "a") as f:
        f.write(json.dumps(str(seg)) + "\\n")  # W-CODA single-GPU style: a Python repr inside a JSON string
''')


@pytest.fixture
def fake_bevformer(tmp_path):
    repo = tmp_path / "BEVFormer"
    (repo / "tools").mkdir(parents=True)
    (repo / "tools" / "test.py").write_text(FAKE_TEST_PY)
    (repo / "projects" / "configs").mkdir(parents=True)
    (repo / "projects" / "configs" / "seg_det.py").write_text("# config\n")
    ckpt = tmp_path / "ckpt.pth"
    ckpt.write_bytes(b"0")
    data = _infos()
    frames = {f"sceneA_s{i}": {cam: f"/gen/gen_samples_0/{cam}/{i}.png" for cam in CAMS} for i in range(3)}
    info_path = save_infos(rewrite_infos(data, frames, 0), str(tmp_path / "infos_gen0.pkl"))
    return repo, ckpt, info_path


def test_bevformer_runner_with_fake_script(fake_bevformer, tmp_path):
    repo, ckpt, info_path = fake_bevformer
    runner = BEVFormerRunner(str(repo), "projects/configs/seg_det.py", str(ckpt), python=sys.executable,
                             env={"FAKE_FLAG": "yes"})
    work = str(tmp_path / "work")
    out = runner.run(info_path, work, tag="gen0")
    rec = json.load(open(os.path.join(work, "record.json")))
    assert rec["argv"][0].endswith(os.path.join("tools", "test.py"))
    assert rec["argv"][1] == str(repo / "projects" / "configs" / "seg_det.py") and rec["argv"][2] == str(ckpt)
    assert rec["argv"][3:5] == ["--eval", "bbox"]
    assert os.path.realpath(rec["cwd"]) == os.path.realpath(str(repo))
    assert rec["pythonpath"].split(os.pathsep)[0] == str(repo)
    assert rec["env_info"] == os.path.abspath(info_path) and rec["extra_env"] == "yes"
    assert rec["scenes"] == ["sceneA_gen0"] * 3 and rec["tokens"] == ["sceneA_s0", "sceneA_s1", "sceneA_s2"]
    assert rec["paths"][1] == "/gen/gen_samples_0/CAM_FRONT/1.png"
    assert rec["mmcv_imported"] is False
    # boxes: every scored sample present, empty where the model found nothing
    assert set(out.boxes) == {"sceneA_s0", "sceneA_s1", "sceneA_s2"}
    assert out.boxes["sceneA_s1"] == [] and out.boxes["sceneA_s0"][0]["detection_name"] == "car"
    assert out.seg["sceneA_s2"].shape == (4, 6) and int(out.seg["sceneA_s2"][0, 0]) == 2
    assert out.seg_summary == {"divider": 0.5, "ped_crossing": 0.25, "boundary": 0.125, "mIoU": 0.2917}
    assert os.path.isfile(out.files["log"]) and out.files["results"].endswith("results_nusc.json")
    assert "mmcv" not in sys.modules  # nothing of BEVFormer's stack entered this process


def test_bevformer_runner_custom_command(fake_bevformer, tmp_path):
    repo, ckpt, info_path = fake_bevformer
    cmd = ("{python} tools/test.py {config} {checkpoint} --launcher none --eval bbox "
           "--cfg-options data.test.ann_file={info} --log_part {tag}")
    runner = BEVFormerRunner(str(repo), "projects/configs/seg_det.py", str(ckpt), python=sys.executable, command=cmd)
    assert runner.build_command(info_path, "/w", "gen3")[-2:] == ["--log_part", "gen3"]
    out = runner.run(info_path, str(tmp_path / "w2"), tag="gen3")
    assert "sceneA_s0" in out.boxes
    with pytest.raises(PerceptionSetupError, match="placeholder"):
        BEVFormerRunner(str(repo), "projects/configs/seg_det.py", str(ckpt), python=sys.executable,
                        command="{python} {nope}").build_command(info_path, "/w", "t")


def test_bevformer_runner_errors(fake_bevformer, tmp_path):
    repo, ckpt, info_path = fake_bevformer
    cfg = "projects/configs/seg_det.py"
    with pytest.raises(PerceptionSetupError, match="checkout not found"):
        BEVFormerRunner(str(tmp_path / "missing"), cfg, str(ckpt), python=sys.executable)
    with pytest.raises(PerceptionSetupError, match="checkpoint not found"):
        BEVFormerRunner(str(repo), cfg, str(tmp_path / "none.pth"), python=sys.executable)
    with pytest.raises(PerceptionSetupError, match="config not found"):
        BEVFormerRunner(str(repo), "projects/configs/none.py", str(ckpt), python=sys.executable)
    with pytest.raises(PerceptionSetupError, match="python executable"):
        BEVFormerRunner(str(repo), cfg, str(ckpt), python=str(tmp_path / "envs" / "bev" / "bin" / "python"))
    with pytest.raises(PerceptionRunError, match="exited with 3") as e:
        BEVFormerRunner(str(repo), cfg, str(ckpt), python=sys.executable, env={"FAKE_FAIL": "1"}).run(
            info_path, str(tmp_path / "w3"), "gen0")
    assert "CUDA out of memory (fake)" in str(e.value)
    with pytest.raises(PerceptionRunError, match="wrote no"):
        BEVFormerRunner(str(repo), cfg, str(ckpt), python=sys.executable, env={"FAKE_NO_OUTPUT": "1"},
                        search_dirs=[str(tmp_path / "w4")]).run(info_path, str(tmp_path / "w4"), "gen0")


def test_read_seg_file_formats(tmp_path):
    np.savez(str(tmp_path / "a.npz"), tok1=np.zeros((2, 2), np.int64))
    maps, summ = read_seg_file(str(tmp_path / "a.npz"))
    assert summ is None and maps["tok1"].shape == (2, 2)
    with open(tmp_path / "b.pkl", "wb") as f:
        pickle.dump([{"sample_idx": "t", "seg_preds": np.ones((3, 2, 2), bool)}], f)
    maps, _ = read_seg_file(str(tmp_path / "b.pkl"))
    assert maps["t"].shape == (3, 2, 2)
    (tmp_path / "segmentation_result.json").write_text(
        json.dumps({"Divider": 0.1, "Pred_Crossing": 0.2, "Boundary": 0.3, "mIoU": 0.2, "Validation_num": 9}) + "\n")
    _, summ = read_seg_file(str(tmp_path / "segmentation_result.json"))
    assert summ == {"divider": 0.1, "ped_crossing": 0.2, "boundary": 0.3, "mIoU": 0.2}


def test_prepare_generations_from_real_videos(tmp_path):
    from coredit_video.evaluation.video_io import available_readers, available_writers, write_video

    if not available_writers() or not available_readers():
        pytest.skip("no video reader/writer installed")
    data = _infos()
    info_path = save_infos(data, str(tmp_path / "infos.pkl"))
    for cam, v in (("CAM_FRONT", 60), ("CAM_BACK", 180)):
        frames = np.full((5, 42, 80, 3), v, np.uint8)
        write_video(str(tmp_path / "gen_video" / "sceneB_s0_gen0" / f"sceneB_s0_{cam}.mp4"), frames)
    out = prepare_generations(str(tmp_path / "gen_video"), info_path, str(tmp_path / "prep"), P)
    assert len(out) == 1 and out[0].sample_tokens == ["sceneB_s0", "sceneB_s1", "sceneB_s2"]
    from PIL import Image

    info = load_infos(out[0].info_path)["infos"][2]
    img = np.asarray(Image.open(info["cams"]["CAM_BACK"]["data_path"]))
    assert img.shape == (90, 160, 3) and np.all(img[:6] == 128)
    assert abs(float(img[10:].mean()) - 180) < 4  # lossy codec


def test_bevformer_runner_finds_checkout_outputs_and_ignores_stale(fake_bevformer, tmp_path):
    repo, ckpt, info_path = fake_bevformer
    work = tmp_path / "w5"
    stale = work / "old" / "results_nusc.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"results": {"stale": []}}))
    os.utime(str(stale), (1e9, 1e9))  # written long before this run
    runner = BEVFormerRunner(str(repo), "projects/configs/seg_det.py", str(ckpt), python=sys.executable,
                             env={"FAKE_REPO_OUT": "1"})
    out = runner.run(info_path, str(work), "gen0")
    assert "stale" not in out.boxes
    assert out.files["results"].startswith(str(repo / "test"))  # BEVFormer's own json prefix in the checkout
