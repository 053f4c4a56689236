"""The embedded synthetic data set, its condition features, the toy codec and the nuScenes export."""
import math
import re

import numpy as np
import pytest
import torch

from coredit_video.embedded.world import (BevGrid, CAMERA_NAMES, CLASS_NAMES, SyntheticDrivingDataset, collate,
                                         encode_condition)
from coredit_video.embedded.world.cameras import project
from coredit_video.embedded.world.classes import CATEGORY_NAMES, CLASS_COLORS
from coredit_video.embedded.codec import ToyCodec, psnr
from coredit_video.embedded.world.geometry import (BOX_FACES, apply_transform, box_corners, invert_transform,
                                         matrix_to_quaternion, quaternion_to_matrix, quaternion_to_yaw)
from coredit_video.embedded.world.scene import EGO_LENGTH, EGO_REAR_OVERHANG, EGO_WIDTH, _footprint, _overlap

TENSOR_KEYS = ("video", "cams", "intrinsics", "cam2ego", "ego2global", "boxes", "labels", "box_mask", "box_pixels",
               "box_visibility", "y", "bev_map", "timestamps")


def small(n=8, **kw):
    kw.setdefault("frames", 3)
    return SyntheticDrivingDataset(n, **kw)


def assert_items_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def test_deterministic_and_independent_of_length_and_order():
    short, long_ = small(5, seed=3), small(1000, seed=3)
    late_first = short[4]
    _ = short[1], short[0]
    assert_items_equal(late_first, short[4])  # order of access does not matter
    assert_items_equal(short[4], long_[4])  # nor does the data-set length
    assert_items_equal(short[-1], short[4])
    other = small(5, seed=4)[4]
    assert not torch.equal(other["video"], late_first["video"])
    assert other["token"] != late_first["token"]
    with pytest.raises(IndexError):
        short[5]


def test_item_shapes_types_and_ranges():
    ds = SyntheticDrivingDataset(2)  # the defaults: 6 views, 8 frames, 64 x 112
    it = ds[0]
    NC, T, H, W, M = 6, 8, 64, 112, 8
    shapes = {"video": (NC, 3, T, H, W), "cams": (NC, 12), "intrinsics": (NC, 3, 3), "cam2ego": (NC, 4, 4),
              "ego2global": (T, 4, 4), "boxes": (T, M, 9), "labels": (T, M), "box_mask": (T, M),
              "box_pixels": (T, M), "box_visibility": (T, M), "y": (M + 1, 32), "bev_map": (3, 64, 64),
              "timestamps": (T,)}
    for k, s in shapes.items():
        assert tuple(it[k].shape) == s, k
    for k in ("video", "cams", "intrinsics", "cam2ego", "ego2global", "boxes", "y", "bev_map", "box_visibility"):
        assert it[k].dtype == torch.float32, k
    assert it["labels"].dtype == torch.int64 and it["box_mask"].dtype == torch.bool
    v = it["video"]
    assert v.min() >= -1 and v.max() <= 1 and v.std() > 0.2
    assert set(torch.unique(it["bev_map"]).tolist()) <= {0.0, 1.0} and (it["bev_map"].sum((1, 2)) > 0).all()
    mask = it["box_mask"]
    n = int(mask[0].sum())
    assert 3 <= n <= M and (mask == mask[0]).all() and mask[0, :n].all()  # slots 0..n-1, every frame
    assert ((it["labels"] >= 0) == mask).all() and (it["labels"][mask] < len(CLASS_NAMES)).all()
    assert (it["boxes"][~mask] == 0).all() and (it["boxes"][mask][:, 3:6] > 0.3).all()
    assert ((it["box_visibility"] >= 0) & (it["box_visibility"] <= 1)).all()
    assert torch.all(torch.diff(it["timestamps"]) == 500_000)
    assert it["camera_names"] == list(CAMERA_NAMES)
    toks = [it["token"], it["scene_token"], *it["frame_tokens"], *[t for t in it["instance_tokens"] if t]]
    assert len(set(toks)) == len(toks) == 2 + T + n and all(re.fullmatch("[0-9a-f]{32}", t) for t in toks)
    assert it["instance_tokens"][n:] == [""] * (M - n)
    assert it["token"] != ds[1]["token"]
    # Rigid transforms: orthonormal rotations, cameras about 1.5 m up, the ego on the ground.
    for m in [*it["cam2ego"], *it["ego2global"]]:
        r = m[:3, :3].double()
        assert torch.allclose(r.T @ r, torch.eye(3, dtype=torch.float64), atol=1e-5)
        assert abs(torch.det(r).item() - 1) < 1e-5
    assert torch.allclose(it["cam2ego"][:, 2, 3], torch.full((NC,), 1.53), atol=0.06)
    assert (it["ego2global"][:, 2, 3] == 0).all()


def test_camera_rig_matches_nuscenes_layout():
    ds = small(1, image_hw=(90, 160))
    yaws = {"CAM_FRONT": 0, "CAM_FRONT_RIGHT": -55, "CAM_BACK_RIGHT": -110, "CAM_BACK": 180, "CAM_BACK_LEFT": 110,
            "CAM_FRONT_LEFT": 55}
    for name, k, e in zip(ds.camera_names, ds.intrinsics, ds.cam2ego):
        axis = e[:3, 2]  # optical axis in the ego frame
        assert abs(axis[2]) < 1e-9
        assert abs((math.degrees(math.atan2(axis[1], axis[0])) - yaws[name] + 180) % 360 - 180) < 1e-6
        assert np.allclose(e[:3, 1], [0, 0, -1])  # image down = ego down
        assert (k[0, 2], k[1, 2]) == (80, 45) and k[0, 0] == k[1, 1]
        hfov = 2 * math.degrees(math.atan(80 / k[0, 0]))
        assert (85 < hfov < 95) if name == "CAM_BACK" else (60 < hfov < 70)
    feats = small(1)[0]["cams"]
    assert torch.allclose(feats[:, 4:7], torch.from_numpy(ds.cam2ego[:, :3, 2]).float())


def test_collate_stacks_tensors_and_lists_strings():
    ds = small(3)
    batch = collate([ds[0], ds[2]])
    for k in TENSOR_KEYS:
        assert batch[k].shape[0] == 2 and torch.equal(batch[k][1], ds[2][k])
    assert batch["token"] == [ds[0]["token"], ds[2]["token"]]
    assert len(batch["frame_tokens"]) == 2 and len(batch["frame_tokens"][0]) == 3
    assert batch["index"].tolist() == [0, 2]


def test_boxes_are_consistent_with_the_global_frame_and_never_collide():
    ds = small(6, frames=4)
    for i in range(6):
        it, scene = ds[i], ds.scene(i)
        n = len(scene.tracks)
        for t in range(4):
            g = scene.boxes_global(t)
            e2g = it["ego2global"][t].double().numpy()
            b = it["boxes"][t, :n].double().numpy()
            assert np.allclose(apply_transform(e2g, b[:, :3]), g["center"], atol=2e-3)
            ego_yaw = math.atan2(e2g[1, 0], e2g[0, 0])
            dyaw = (b[:, 6] + ego_yaw - g["yaw"] + np.pi) % (2 * np.pi) - np.pi
            assert np.allclose(dyaw, 0, atol=1e-5)
            assert np.allclose(b[:, 7:9] @ e2g[:2, :2].T, g["velocity"], atol=1e-4)
            assert np.allclose(b[:, 2], b[:, 5] / 2, atol=1e-5)  # boxes stand on the ground
            rects = [_footprint(*tr.road_position(t * scene.frame_dt), tr.size, tr.heading, 0.0)
                     for tr in scene.tracks]
            s_e, l_e = scene.ego_road(t)
            ego = _footprint(s_e + EGO_LENGTH / 2 - EGO_REAR_OVERHANG, l_e, np.array([EGO_WIDTH, EGO_LENGTH, 0]),
                             0.0, 0.0)
            for a in range(n):
                assert not _overlap(rects[a], ego)
                for c in range(a):
                    assert not _overlap(rects[a], rects[c])


def test_visible_boxes_project_inside_images_with_their_class_colour():
    ds = small(3, frames=2)
    checked = 0
    for i in range(3):
        it, r = ds[i], ds.render(i)
        n = int(it["box_mask"][0].sum())
        assert np.array_equal(r["visible"][:, :n], it["box_pixels"][:, :n].numpy())
        for t in range(2):
            boxes = it["boxes"][t, :n].double().numpy()
            corners = box_corners(boxes[:, :3], boxes[:, 3:6], boxes[:, 6])
            for c in range(6):
                ids = r["ids"][c, t]
                img = r["image"][c, t].astype(float)
                for m in range(n):
                    px = np.argwhere(ids == m)
                    if not len(px):
                        continue
                    uv, depth = project(corners[m], ds.intrinsics[c], ds.cam2ego[c])
                    if (depth > 0.1).all():  # whole box in front: its pixels lie in the corners' 2D hull box
                        assert px[:, 1].min() >= uv[:, 0].min() - 0.5 and px[:, 1].max() <= uv[:, 0].max() + 0.5
                        assert px[:, 0].min() >= uv[:, 1].min() - 0.5 and px[:, 0].max() <= uv[:, 1].max() + 0.5
                        checked += 1
                    col = np.array(CLASS_COLORS[CLASS_NAMES[int(it["labels"][t, m])]], float)
                    rgb = img[px[:, 0], px[:, 1]]
                    chroma = rgb / rgb.sum(1, keepdims=True)
                    assert np.abs(chroma - col / col.sum()).max() < 0.02
                    assert ((rgb.sum(1) >= 0.5 * col.sum()) & (rgb.sum(1) <= col.sum() + 3)).all()
                    assert it["box_visibility"][t, m] > 0
    assert checked >= 10


def test_view_layout_says_what_each_pixel_shows():
    """Independent reference: the rendered colours. A pixel the layout calls class k has k's chromaticity, one it
    calls ground label g has g's paint colour, one it leaves empty is sky (blue dominant, above the horizon)."""
    from coredit_video.embedded.world.classes import (CROSSING_COLOR, DIVIDER_COLOR, GRASS_COLOR, ROAD_COLOR,
                                                      SIDEWALK_COLOR)

    ground_colors = np.array([GRASS_COLOR, SIDEWALK_COLOR, ROAD_COLOR, DIVIDER_COLOR, CROSSING_COLOR], float)
    ds = small(2, frames=2)
    seen = set()
    for i in range(2):
        it = ds[i]
        lay = it["view_layout"].numpy()  # [NC, 15, T, H, W]
        assert lay.shape == (6, 5 + len(CLASS_NAMES), 2, 64, 112) and set(np.unique(lay)) <= {0.0, 1.0}
        assert lay.sum(1).max() == 1  # one label per pixel at most
        img = (it["video"].numpy().transpose(0, 2, 3, 4, 1) + 1) * 127.5  # [NC, T, H, W, 3]
        code = np.where(lay.sum(1) > 0, lay.argmax(1), -1)  # [NC, T, H, W]
        for c in np.unique(code):
            rgb = img[code == c]
            if c < 0:
                assert (rgb[:, 2] > rgb[:, 0]).all() and np.argwhere(code == c)[:, 2].max() < 0.6 * 64
            elif c < 5:
                assert np.abs(rgb - ground_colors[c]).max() < 1.0, c
            else:
                col = np.array(CLASS_COLORS[CLASS_NAMES[c - 5]], float)
                assert np.abs(rgb / rgb.sum(1, keepdims=True) - col / col.sum()).max() < 0.02, c
            seen.add(int(c))
    assert {-1, 0, 1, 2} <= seen and any(c >= 5 for c in seen)


def test_box_faces_cover_the_box():
    c = box_corners(np.zeros(3), np.array([2.0, 4.0, 1.0]), 0.3)
    centre = c[BOX_FACES].mean(1)  # [6, 3]
    assert np.allclose(np.abs(centre).max(1), [2.0, 2.0, 1.0, 1.0, 0.5, 0.5], atol=0.6)
    q = matrix_to_quaternion(quaternion_to_matrix([0.3, -0.2, 0.5, 0.8]))
    assert np.allclose(quaternion_to_matrix(q), quaternion_to_matrix([0.3, -0.2, 0.5, 0.8]))
    assert abs(quaternion_to_yaw(matrix_to_quaternion(quaternion_to_matrix([math.cos(1), 0, 0, math.sin(1)])))
               - 2) < 1e-9
    m = np.eye(4)
    m[:3, :3] = quaternion_to_matrix(q)
    m[:3, 3] = [1, 2, 3]
    assert np.allclose(invert_transform(m) @ m, np.eye(4))


def test_bev_map_layout_follows_the_ego():
    ds = small(4, frames=2)
    grid = BevGrid()
    dx, dy = grid.cell
    for i in range(4):
        scene = ds.scene(i)
        bev = ds[i]["bev_map"].numpy() > 0.5
        assert np.array_equal(bev, ds.bev_map(i, 0))
        s_e, l_e = scene.ego_road(0)
        # The centre line runs along the ego at y = -l_e: rows away from the crossing have it in that column.
        col = int(math.floor((15 - (-l_e)) / dy))
        rows = [r for r in range(64) if not bev[1, r].any()]
        assert bev[0, rows][:, max(col - 1, 0):col + 2].any(1).mean() > 0.95
        # The road edges at y = -l_e +- half width are boundary cells.
        for y in (-l_e + scene.road.half_width, -l_e - scene.road.half_width):
            c = int(math.floor((15 - y) / dy))
            if 0 <= c < 64:
                assert bev[2, :, c].mean() > 0.95
        # The crossing lies ahead of (or behind) the ego by crossing_s - s_e metres.
        mid = scene.road.crossing_s + scene.road.crossing_depth / 2 - s_e
        if abs(mid) < 28:
            assert bev[1, int(math.floor((30 - mid) / dx)), col]


def test_encode_condition():
    boxes = torch.zeros(5, 9)
    boxes[:, 0] = torch.tensor([30.0, -5.0, 10.0, 0.0, 0.0])
    boxes[:, 3:6] = 1.0
    boxes[:, 7] = 2.0
    labels = torch.tensor([0, 5, 5, 1, 0])
    mask = torch.tensor([True, True, True, False, False])
    y = encode_condition(boxes, labels, mask, cond_dim=40)
    assert y.shape == (6, 40) and y.dtype == torch.float32
    assert torch.equal(y, encode_condition(boxes.numpy(), labels.numpy(), mask.numpy(), 40))
    assert y[0, 1] == 1 and y[0, 0] == 0  # scene token
    assert torch.allclose(y[0, 2:12].sum(), torch.tensor(1.0)) and torch.isclose(y[0, 2 + 5], torch.tensor(2 / 3))
    assert torch.isclose(y[0, 12], torch.tensor(3 / 5)) and torch.isclose(y[0, 13], torch.tensor(0.2))
    assert torch.allclose(y[1:4, 12] * 50, torch.tensor([-5.0, 10.0, 30.0]))  # nearest first
    assert (y[1:4, 0] == 1).all() and (y[4:] == 0).all()
    assert torch.equal(encode_condition(boxes, labels, mask, 40, num_tokens=3)[1:], y[1:3])
    batched = encode_condition(boxes.expand(2, 3, 5, 9), labels.expand(2, 3, 5), mask.expand(2, 3, 5), 40)
    assert batched.shape == (2, 3, 6, 40) and torch.equal(batched[1, 2], y)
    with pytest.raises(ValueError):
        encode_condition(boxes, labels, mask, cond_dim=16)


def test_toy_codec_round_trip_and_structure():
    ds = small(4, frames=4)
    video = collate([ds[i] for i in range(4)])["video"]  # [B, NC, 3, T, H, W]
    codec = ToyCodec()
    z = codec.encode(video)
    assert z.shape == (4, 6, 4, 4, 32, 56)
    assert not list(codec.parameters()) and not codec.state_dict()
    rec = codec.decode(z)
    assert rec.shape == video.shape
    assert psnr(video, rec) > 28.0  # lossy: about 31 dB on this data (see the codec's docstring)
    assert torch.allclose(codec.encode(rec), z, atol=1e-5)  # decode is the transpose of an orthonormal encode
    assert torch.allclose(codec.decode(codec.encode(rec)), rec, atol=1e-5)
    # The block mean colour survives exactly.
    pooled = torch.nn.functional.avg_pool2d(video[0, 0].transpose(0, 1), 2)
    assert torch.allclose(torch.nn.functional.avg_pool2d(rec[0, 0].transpose(0, 1), 2), pooled, atol=1e-5)
    full = ToyCodec(latent_channels=12)
    assert torch.allclose(full.decode(full.encode(video[:1])), video[:1], atol=1e-5)  # complete basis: lossless
    assert psnr(video, ToyCodec(latent_channels=5).decode(ToyCodec(latent_channels=5).encode(video))) > psnr(video, rec)
    scaled = ToyCodec(scale=0.5)
    assert torch.allclose(scaled.encode(video), 0.5 * z, atol=1e-6)
    assert torch.allclose(scaled.decode(scaled.encode(video)), rec, atol=1e-5)
    with pytest.raises(ValueError):
        codec.encode(video[..., :63, :])
    with pytest.raises(ValueError):
        ToyCodec(latent_channels=13)


def test_nuscenes_export_loads_in_the_devkit(tmp_path):
    pytest.importorskip("nuscenes", reason="nuscenes-devkit is not installed (pip install '.[eval]')")
    from nuscenes.map_expansion.map_api import NuScenesMap
    from nuscenes.nuscenes import NuScenes
    from PIL import Image

    from coredit_video.embedded.world.infos import load_infos
    from coredit_video.embedded.world.nuscenes_export import write_nuscenes

    ds = small(4, frames=3, seed=7)
    out = write_nuscenes(ds, str(tmp_path), indices=[0, 1])
    nusc = NuScenes(version="v1.0-synthetic", dataroot=str(tmp_path), verbose=False)
    assert len(nusc.scene) == 2 and len(nusc.sample) == 6 and len(nusc.sample_data) == 36
    infos = load_infos(out["infos"])["infos"]
    assert [i["token"] for i in infos] == ds[0]["frame_tokens"] + ds[1]["frame_tokens"]
    for idx in (0, 1):
        it = ds[idx]
        scene = nusc.get("scene", it["scene_token"])
        assert scene["first_sample_token"] == it["frame_tokens"][0] and scene["nbr_samples"] == 3
        n = int(it["box_mask"][0].sum())
        assert sum(1 for r in nusc.instance if r["token"] in it["instance_tokens"]) == n
        for t, stok in enumerate(it["frame_tokens"]):
            sample = nusc.get("sample", stok)
            assert sorted(sample["data"]) == sorted(CAMERA_NAMES) and len(sample["anns"]) == n
            e2g = it["ego2global"][t].double().numpy()
            for m in range(n):
                ann = next(nusc.get("sample_annotation", a) for a in sample["anns"]
                           if nusc.get("sample_annotation", a)["instance_token"] == it["instance_tokens"][m])
                box = it["boxes"][t, m].double().numpy()
                assert np.allclose(ann["translation"], apply_transform(e2g, box[:3]), atol=2e-3)
                assert np.allclose(ann["size"], box[3:6], atol=1e-5)
                yaw = quaternion_to_yaw(ann["rotation"]) - math.atan2(e2g[1, 0], e2g[0, 0])
                assert abs((yaw - box[6] + np.pi) % (2 * np.pi) - np.pi) < 1e-4
                # The devkit's velocity (finite differences along the instance's annotations) is the box's.
                vel = nusc.box_velocity(ann["token"])[:2]
                assert np.allclose(vel, e2g[:2, :2] @ box[7:9], atol=1e-3)
                assert ann["category_name"] == CATEGORY_NAMES[CLASS_NAMES[int(it["labels"][t, m])]]
            path, boxes, K = nusc.get_sample_data(sample["data"]["CAM_FRONT"])
            assert np.allclose(K, ds.intrinsics[0]) and Image.open(path).size == (112, 64)
            img = np.asarray(Image.open(path)).astype(float)
            ref = (it["video"][0, :, t].permute(1, 2, 0).numpy() + 1) * 127.5
            assert np.abs(img - ref).mean() < 3  # JPEG
            info = infos[3 * idx + t]
            assert np.allclose(info["gt_boxes"][:, :6], it["boxes"][t, :n, :6].numpy(), atol=1e-5)
            assert list(info["gt_names"]) == [CLASS_NAMES[k] for k in it["labels"][t, :n].tolist()]
            assert info["cams"]["CAM_BACK"]["data_path"] == nusc.get_sample_data_path(sample["data"]["CAM_BACK"])
    # The map expansion: NuScenesMap reads it, and its crossing rasterised around the ego is our bev_map's.
    nmap = NuScenesMap(dataroot=str(tmp_path), map_name="boston-seaport")
    compared = 0
    for idx in (0, 1):
        it, scene = ds[idx], ds.scene(idx)
        road = scene.road
        cx, cy = road.to_global(road.crossing_s + road.crossing_depth / 2, 0.0)
        assert nmap.layers_on_point(cx, cy)["ped_crossing"]
        e2g = it["ego2global"][0].double().numpy()
        yaw = math.degrees(math.atan2(e2g[1, 0], e2g[0, 0]))
        mask = nmap.get_map_mask((e2g[0, 3], e2g[1, 3], 30, 60), yaw, ["ped_crossing"], canvas_size=(64, 64))
        ours = mask[0].astype(bool).T[::-1, ::-1]  # devkit rows = +y, columns = +x; ours: rows = -x, cols = -y
        gt = it["bev_map"][1].numpy() > 0.5
        if gt.sum() >= 40:  # well inside the raster (the devkit clips partial cells at its edge)
            assert (ours & gt).sum() / (ours | gt).sum() > 0.5
            compared += 1
    assert compared
