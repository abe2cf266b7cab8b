"""The gate and batch segmentation on a real local Ray cluster (a head and a worker node, separate
raylet processes): the same report and files as in one process, actor deaths, unreadable frames,
interruption and resume. Without Ray only the install message is checked."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import pytest

from apps.cli import run_cli
from tests.conftest import ROOT, VARIANT, seeded_tiny, synthetic_frame, write_self_labelled, tiny_int8_files

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason='Ray is an optional extra, not installed: pip install -e ".[ray]"')
TIMING = {"seconds", "ms_per_frame", "ms_per_frame_p50", "ms_per_tile", "cluster"}


@pytest.fixture(scope="module")
def cluster():
    """A head node and one worker node of one CPU each, 100 MB object stores, no dashboard."""
    from ray.cluster_utils import Cluster

    store = 100 * 2**20
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                      "object_store_memory": store})
    c.add_node(num_cpus=1, object_store_memory=store)
    c.wait_for_nodes()
    yield c.address
    c.shutdown()


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    """A seeded reference, FP32 / FP16 / both INT8 ONNX artifacts, 5 self-labelled frames."""
    from export.pipeline import make_fp16
    from runtime.backends import open_backend

    d = tmp_path_factory.mktemp("ray_gate")
    model, ckpt = seeded_tiny(d, 1)
    made = tiny_int8_files(d / "art")
    fp16 = make_fp16(made["fp32"], made["verifier"], log=lambda *a: None)
    arts = [made["fp32"].path, fp16.path] + [made[k].path for k in ("trt", "ort") if made.get(k)]
    with open_backend(VARIANT, model=model) as ref:
        write_self_labelled(d / "data", "val", [synthetic_frame(96, 200, seed=i) for i in range(5)], ref)
    return {"dir": d, "ckpt": str(ckpt), "data": str(d / "data"), "artifacts": [str(a) for a in arts]}


def run_gate(gate, out, *extra, artifacts=None):
    from apps.evaluate import main

    artifacts = gate["artifacts"] if artifacts is None else artifacts
    argv = ["--data", gate["data"], "--reference", VARIANT, "--checkpoint", gate["ckpt"], "--threads", "1",
            *(["--artifacts", *artifacts] if artifacts else []), "--out", str(out), *extra]
    code = run_cli(main, argv)
    return code, json.loads((out / "evaluate.json").read_text())


def same(a, b, path="report"):
    """Equal to 1e-9, timings aside."""
    if isinstance(a, dict):
        keys = (set(a) | set(b)) - TIMING
        for k in keys:
            assert k in a and k in b, f"{path}.{k} missing on one side"
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= 1e-9, f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@needs_ray
def test_gate_on_ray_equals_the_gate_in_one_process(cluster, gate, tmp_path):
    """Every CPU artifact kind (FP32, FP16, INT8 in both layouts in ONNX Runtime; OpenVINO rows
    where installed): mIoU, per-class IoU, drops, agreement and the report equal to 1e-9."""
    extra = []
    if importlib.util.find_spec("openvino") is not None:
        extra = ["--also-openvino", gate["artifacts"][0], gate["artifacts"][-1]]
    code_here, here = run_gate(gate, tmp_path / "here", *extra)
    code_ray, ray = run_gate(gate, tmp_path / "ray", *extra, "--ray", cluster)
    assert code_ray == code_here
    assert len(ray["rows"]) == 1 + len(gate["artifacts"]) + len(extra[1:])
    assert {r["precision"] for r in ray["rows"]} >= {"fp32", "fp16", "int8"}
    same(ray, here)
    assert ray["cluster"]["reference_actors"] == 1 and ray["cluster"]["artifact_actors"] == 1
    assert ray["cluster"]["frames_retried"] == []
    md = [(tmp_path / d / "evaluate.md").read_text().splitlines() for d in ("here", "ray")]
    cut = lambda line: "|".join(line.split("|")[:7] + line.split("|")[9:])  # noqa: E731 (ms columns aside)
    assert [cut(x) for x in md[0]] == [cut(x) for x in md[1]]


@needs_ray
def test_artifact_actors_import_no_torch(cluster, gate):
    """Artifact actors need the runtime and their backend only; torch stays in reference actors."""
    from runtime.cluster import ClusterOptions
    from runtime.cluster.pool import Pool
    from runtime.cluster.session import ray_session
    from runtime.tiling import Tiler

    options = ClusterOptions(address=cluster)
    spec = (gate["artifacts"][-1], "onnxruntime", {"threads": 1})
    with ray_session(options) as ray, Pool(ray, "artifact", {"specs": [spec], "tiler": Tiler()}, 1, 1, 0,
                                           options) as pool:
        actor = pool.slots[0].actor
        assert ray.get(actor.loaded.remote("onnxruntime")) is True
        assert ray.get(actor.loaded.remote("torch")) is False
        assert pool.headers[0]["label"] == "onnxruntime:" + gate["artifacts"][-1].rsplit("/", 1)[1][:-5]


@needs_ray
@pytest.mark.parametrize("pool", ["artifact", "reference"])
def test_a_killed_actor_has_its_frames_rerun_once(cluster, gate, tmp_path, pool):
    """An actor dies (os._exit, as on SIGKILL) on frame 2: its frames run again on a new actor, each
    frame is counted once, and the report equals the one-process one. A dead reference actor also
    fails the artifact work waiting for its label map: that frame runs again whole."""
    from runtime.cluster import ClusterOptions
    from runtime.cluster.gate import ray_executor
    from runtime.evaluation import evaluate

    args = dict(data=gate["data"], reference=VARIANT, artifacts=gate["artifacts"][:1], checkpoint=gate["ckpt"],
                backend_options={"threads": 1})
    here = evaluate(**args)
    options = ClusterOptions(address=cluster, threads=1, crash_once=(2, str(tmp_path / "crashed"), pool))
    ray = evaluate(**args, executor=ray_executor(options))
    assert (tmp_path / "crashed").exists()
    retried = ray["cluster"]["frames_retried"]
    assert 2 in retried and len(retried) == len(set(retried)) and ray["cluster"]["actors_replaced"] == 1
    assert all(r["images"] == 5 for r in ray["rows"])
    same(json.loads(json.dumps(ray, default=str)), json.loads(json.dumps(here, default=str)))


@needs_ray
def test_an_unreadable_frame_is_reported_by_name_and_the_driver_needs_no_torch(cluster, gate, tmp_path):
    """A truncated frame is named and left out, the gate goes on; the driver runs with torch
    unimportable (the PyTorch reference runs in its actors only)."""
    import subprocess

    data = tmp_path / "data"
    shutil.copytree(gate["data"], data)
    broken = sorted(data.rglob("*_leftImg8bit.png"))[1]
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot an image" + b"\0" * 64)
    out = tmp_path / "out"
    argv = ["--data", str(data), "--reference", VARIANT, "--checkpoint", gate["ckpt"], "--threads", "1",
            "--artifacts", gate["artifacts"][0], "--out", str(out), "--ray", cluster]
    code = ("import sys; sys.modules['torch'] = None\n"
            "from apps.cli import run_cli; from apps.evaluate import main\n"
            f"sys.exit(run_cli(main, {argv!r}))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode in (0, 1) and "Traceback" not in res.stderr, res.stderr[-2000:]   # 1: a drop too large
    report = json.loads((out / "evaluate.json").read_text())
    assert report["images"] == 4 and all(r["images"] == 4 for r in report["rows"])
    name = "testcity/testcity_000000_000001"
    assert any(name in n and "could not be read" in n for n in report["notes"])
    assert name in res.stderr


@needs_ray
def test_scaling_benchmark_compares_actor_counts_in_one_run(cluster, gate, tmp_path, capsys):
    """The benchmark's shape only (no timing is asserted: the machine is shared)."""
    from apps.ray_benchmark import main

    out = tmp_path / "scaling.json"
    assert run_cli(main, ["--data", gate["data"], "--artifact", gate["artifacts"][-1], "--rounds", "2",
                          "--limit", "2", "--ray", cluster, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["actors"] for r in result["rows"]] == [0, 1, 2]
    assert all(len(r["seconds"]) == 2 and r["frames_per_s"] > 0 for r in result["rows"])
    assert result["rows"][1]["speedup_vs_1_actor"] == 1.0 and "x 1 actor" in capsys.readouterr().out


# -- segment ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seg(tmp_path_factory, gate):
    """Inputs: 3 images (one in a sub-folder), a 3-frame MJPEG video and an unreadable PNG."""
    import cv2

    d = tmp_path_factory.mktemp("ray_seg")
    src = d / "in"
    (src / "city").mkdir(parents=True)
    for i, where in enumerate(["a.png", "b.png", "city/c_leftImg8bit.png"]):
        cv2.imwrite(str(src / where), synthetic_frame(80, 150 + 10 * i, seed=10 + i)[:, :, ::-1])
    video = cv2.VideoWriter(str(src / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 90))
    for i in range(3):
        video.write(synthetic_frame(90, 160, seed=20 + i)[:, :, ::-1])
    video.release()
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    return {"src": src, "model": gate["artifacts"][-1], "dir": d}


def run_segment(seg, out, *extra):
    from apps.segment import main

    return run_cli(main, [str(seg["src"]), "--model", seg["model"], "--out", str(out), "--overlay",
                          "--threads", "1", *extra])


def files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


EXPECTED = {f"{stem}_{kind}.png" for stem in ["a", "b", "city/c", "clip/000000", "clip/000001", "clip/000002"]
            for kind in ("trainIds", "color", "labelIds", "overlay")}


@pytest.fixture(scope="module")
def here(seg):
    out = seg["dir"] / "here"
    assert run_segment(seg, out) == 1            # the unreadable frame: reported, exit status 1
    assert set(files(out)) == EXPECTED
    return files(out)


@needs_ray
def test_segment_on_ray_writes_the_same_files_and_resumes(cluster, seg, here, tmp_path, capsys):
    out = tmp_path / "ray"
    assert run_segment(seg, out, f"--ray={cluster}", "--ray-actors", "2") == 1
    assert files(out) == here                     # byte-identical PNGs, video frames included
    err = capsys.readouterr().err
    assert "broken.png: cannot read" in err and "1 frame(s) could not be read" in err
    # a failure lost one frame's whole set and one file of another: only those two run again
    for name in ("b_trainIds.png", "b_color.png", "b_labelIds.png", "b_overlay.png", "clip/000001_color.png"):
        (out / name).unlink()
    kept = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.png") if "000001" not in p.name}
    assert run_segment(seg, out, "--ray", cluster) == 1
    printed = capsys.readouterr().out
    assert printed.count("complete, skipped") == 4 and "2 frame(s) segmented, 4 complete already" in printed
    assert all((p.stat().st_ino, p.stat().st_mtime_ns) == v for p, v in kept.items())
    assert files(out) == here


@needs_ray
def test_segment_survives_a_killed_actor(cluster, seg, here, tmp_path):
    """An actor dies on frame 4 (a video frame, sent by the driver): it is segmented again, once."""
    from runtime.cluster import ClusterOptions
    from runtime.cluster.segment import segment_on_ray
    from runtime.segmentation import collect_inputs, run_stamp
    from runtime.tiling import Tiler

    out, spec = tmp_path / "ray", (seg["model"], "onnxruntime", {"threads": 1})
    options = ClusterOptions(address=cluster, crash_once=(4, str(tmp_path / "crashed")))
    records = segment_on_ray(spec, collect_inputs([str(seg["src"])]), out, Tiler(), 0.5,
                             run_stamp(*spec, "tiled", None, 0.5), False, options, log=lambda line: None)
    assert (tmp_path / "crashed").exists()
    assert [r["index"] for r in records] == list(range(7)) and records[4]["name"].endswith("clip.avi#0")
    assert files(out) == here


@needs_ray
def test_an_interrupted_segment_run_leaves_no_partial_output(cluster, seg, here, tmp_path, monkeypatch, capsys):
    """Ctrl-C after two frames: the actors are killed, no temporary or half set is left, the same
    command resumes and ends with the one-process files."""
    import runtime.segmentation as segmentation

    real, seen = segmentation.describe, []

    def interrupt_after_two(record):
        seen.append(record)
        if sum(r["status"] == "done" for r in seen) == 2:
            raise KeyboardInterrupt
        return real(record)

    monkeypatch.setattr(segmentation, "describe", interrupt_after_two)
    out = tmp_path / "ray"
    assert run_segment(seg, out, "--ray", cluster) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    leftovers = [p for p in out.rglob(".*") if p.name != ".segment-run.json"]
    assert leftovers == []
    done = files(out)
    stems = {name.rsplit("_", 1)[0] for name in done}
    assert len(stems) >= 2 and all(f"{s}_{k}.png" in done for s in stems
                                       for k in ("trainIds", "color", "labelIds", "overlay"))
    monkeypatch.setattr(segmentation, "describe", real)
    assert run_segment(seg, out, "--ray", cluster) == 1
    assert files(out) == here


def test_segment_refuses_outputs_of_another_model(seg, here, tmp_path):
    """Resume never mixes models: another model's outputs are refused unless --overwrite."""
    from apps.segment import main

    out = tmp_path / "out"
    shutil.copytree(seg["dir"] / "here", out)
    argv = [str(seg["src"]), "--model", VARIANT, "--out", str(out), "--overlay"]
    assert run_cli(main, argv) == 2
    assert run_cli(main, argv + ["--overwrite"]) == 1
    assert files(out) != here and set(files(out)) == EXPECTED


# -- without Ray -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["evaluate", "segment"])
def test_without_ray_the_flag_says_how_to_install_it(command, monkeypatch, tmp_path, capsys):
    import importlib

    monkeypatch.setitem(sys.modules, "ray", None)            # import ray -> ImportError
    main = importlib.import_module(f"apps.{command}").main
    argv = (["--data", str(tmp_path), "--reference", VARIANT, "--out", str(tmp_path / "o"), "--ray"]
            if command == "evaluate"
            else [str(tmp_path), "--model", VARIANT, "--ray"])
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install -e ".[ray]"' in err and err.startswith("error: --ray needs Ray")


@needs_ray
def test_flag_mistakes_are_one_line_errors(tmp_path, capsys):
    from apps.segment import main

    assert run_cli(main, [str(tmp_path), "--model", VARIANT, "--ray", str(tmp_path)]) == 2
    assert "--ray takes a Ray cluster address" in capsys.readouterr().err
    assert run_cli(main, [str(tmp_path), "--model", VARIANT, "--ray-actors", "2"]) == 2
    assert "only apply with --ray" in capsys.readouterr().err
