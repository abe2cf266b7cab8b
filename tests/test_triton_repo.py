"""Triton model-repository export (no server): configs from artifact metadata, parsed with Triton's
model_config.proto; the dynamic-batch ONNX copy; the triton backend's dispatch and user errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from runtime.artifact import read_onnx_meta, sidecar_path
from runtime.backends import backend_for, open_backend
from runtime.errors import ToolkitError
from runtime.triton.env import find_env, home, parse_configs
from runtime.triton.repo import RepoOptions, write_repository
from tests.conftest import VARIANT

QUIET = dict(log=lambda *a: None)


def fake_engine(tiny, d):  # noqa: F811
    """An 'engine' file + sidecar: the writer only copies the plan, so any bytes do for config tests."""
    engine = d / "tiny_cityscapes_64x128_fp16.engine"
    engine.write_bytes(b"not a real plan: no TensorRT here")
    meta = tiny["meta"].replace(precision="fp16")
    sidecar_path(engine).write_text(json.dumps({"meta": meta.to_dict(), "build": {}}))
    return engine, meta


def schema_configs(repo, entries):
    if find_env() is None:
        pytest.skip(f"Triton environment not set up under {home()} (python -m runtime.serve --setup)")
    return {c["name"]: c for c in parse_configs([repo / e["model"] / "config.pbtxt" for e in entries])}


def test_configs_carry_the_artifacts_io_batching_and_metadata(tiny, tmp_path):  # noqa: F811
    engine, engine_meta = fake_engine(tiny, tmp_path)
    opts = RepoOptions(platform="onnxruntime", kind="gpu", instances=3, max_batch=8, preferred=(4, 8), delay_us=500)
    entries = write_repository([tiny["onnx"], tiny["labels_onnx"], engine], tmp_path / "repo", opts, **QUIET)
    assert [e["role"] for e in entries] == ["tile", "frame"] * 3
    cfg = schema_configs(tmp_path / "repo", entries)
    h, w = tiny["meta"].crop
    onnx_cfg = cfg["tiny_cityscapes_64x128"]
    assert onnx_cfg["platform"] == "onnxruntime_onnx" and onnx_cfg["max_batch_size"] == 8
    assert onnx_cfg["input"][0] == {"name": "input", "data_type": "TYPE_FP32", "dims": ["3", str(h), str(w)]}
    assert onnx_cfg["output"][0]["dims"] == ["19", str(h), str(w)]
    assert onnx_cfg["instance_group"] == [{"count": 3, "kind": "KIND_GPU"}]
    assert onnx_cfg["dynamic_batching"] == {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": "500"}
    assert onnx_cfg["parameters"]["nonlocalnet"]["string_value"] == read_onnx_meta(tiny["onnx"]).to_json()
    labels_cfg = cfg["tiny_cityscapes_64x128_labels"]
    assert labels_cfg["output"][0]["data_type"] in ("TYPE_INT64", "TYPE_INT32")
    assert labels_cfg["output"][0]["dims"] == [str(h), str(w)]
    plan = cfg["tiny_cityscapes_64x128_fp16"]         # static engine: no batching, full dims
    assert plan["platform"] == "tensorrt_plan" and plan.get("max_batch_size", 0) == 0
    assert "dynamic_batching" not in plan and plan["input"][0]["dims"] == ["1", "3", str(h), str(w)]
    assert json.loads(plan["parameters"]["nonlocalnet"]["string_value"])["precision"] == engine_meta.precision
    assert (tmp_path / "repo/tiny_cityscapes_64x128_fp16/1/model.plan").read_bytes() == engine.read_bytes()
    frame = cfg["tiny_cityscapes_64x128_frame"]
    assert frame["backend"] == "python" and frame["input"][0]["data_type"] == "TYPE_UINT8"
    assert frame["input"][0]["dims"] == ["-1", "-1", "3"] and frame["output"][0]["dims"] == ["-1", "-1"]
    assert json.loads(frame["parameters"]["tile_io"]["string_value"])["max_batch_size"] == 8
    assert (tmp_path / "repo/tiny_cityscapes_64x128_frame/1/runtime/tiling.py").is_file()


def test_python_platform_and_static_batch_configs(tiny, tmp_path):  # noqa: F811
    opts = RepoOptions(platform="python", max_batch=0, frame_model=False)
    entries = write_repository([tiny["onnx"]], tmp_path / "repo", opts, **QUIET)
    assert [e["role"] for e in entries] == ["tile"]
    model_dir = tmp_path / "repo/tiny_cityscapes_64x128"
    assert (model_dir / "1/model.py").is_file()
    assert (model_dir / "1/model.onnx").read_bytes() == tiny["onnx"].read_bytes()   # max_batch 0: served as is
    cfg = schema_configs(tmp_path / "repo", entries)["tiny_cityscapes_64x128"]
    assert cfg["backend"] == "python" and cfg.get("max_batch_size", 0) == 0 and "dynamic_batching" not in cfg
    assert cfg["input"][0]["dims"] == ["1", "3", "64", "128"]


def test_dynamic_batch_copy_matches_per_tile_runs(tiny, tmp_path):  # noqa: F811
    import onnx
    import onnxruntime as ort

    from runtime.triton.onnx_batch import check_batch_dynamic, make_batch_dynamic

    for src in (tiny["onnx"], tiny["labels_onnx"]):
        dyn = tmp_path / f"dyn_{src.name}"
        onnx.save(make_batch_dynamic(onnx.load(str(src)), 1), str(dyn))
        assert check_batch_dynamic(src, dyn, 1) <= 1e-5
        x = np.random.default_rng(1).normal(size=(3, 3, 64, 128)).astype(np.float32)
        a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (src, dyn))
        per_tile = np.concatenate([a.run(None, {"input": x[i:i + 1]})[0] for i in range(3)])
        np.testing.assert_allclose(b.run(None, {"input": x})[0], per_tile, rtol=1e-5, atol=1e-5)
    broken = onnx.load(str(tmp_path / f"dyn_{tiny['onnx'].name}"))
    conv = next(n for n in broken.graph.node if n.op_type == "Conv")
    weight = next(i for i in broken.graph.initializer if i.name == conv.input[1])
    weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * 2, weight.name))
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    with pytest.raises(ToolkitError, match="does not match the original"):
        check_batch_dynamic(tiny["onnx"], tmp_path / "broken.onnx", 1)


def test_batch_constants_it_cannot_rewrite_are_refused():
    from onnx import TensorProto, helper

    from runtime.triton.onnx_batch import make_batch_dynamic

    graph = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["y"], name="expand")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor("shape", TensorProto.INT64, [4], [1, 3, 4, 4])])
    with pytest.raises(ToolkitError, match="--max-batch 0"):
        make_batch_dynamic(helper.make_model(graph), 1)


def test_repository_option_errors(tiny, tmp_path):  # noqa: F811
    engine, _ = fake_engine(tiny, tmp_path)
    cases = [(RepoOptions(preferred=(16,)), [tiny["onnx"]], "preferred"),
             (RepoOptions(platform="python", kind="gpu"), [tiny["onnx"]], "--platform onnxruntime"),
             (RepoOptions(kind="cpu"), [engine], "GPU only"),
             (RepoOptions(), [tmp_path / "missing.onnx"], "not found"),
             (RepoOptions(platform="tensorflow"), [tiny["onnx"]], "unknown platform")]
    for opts, arts, message in cases:
        with pytest.raises(ToolkitError, match=message):
            write_repository(arts, tmp_path / "bad", opts, **QUIET)
    shutil.copy(tiny["onnx"], tmp_path / "model.tflite")
    with pytest.raises(ToolkitError, match="cannot serve"):
        write_repository([tmp_path / "model.tflite"], tmp_path / "bad", RepoOptions(), **QUIET)


def test_triton_backend_dispatch_and_errors(tmp_path):
    from apps.evaluate import main as evaluate
    from runtime.backends.triton_backend import meta_from_config, parse_triton_artifact
    from runtime.triton.server import free_port

    assert backend_for("triton://127.0.0.1:8000/m") == "triton"
    assert backend_for("triton://127.0.0.1:8000/m", "triton") == "triton"
    for artifact, backend in (("m.onnx", "triton"), ("triton://h:1/m", "onnxruntime")):
        with pytest.raises(ToolkitError, match="Triton"):
            backend_for(artifact, backend)
    for bad in ("triton://127.0.0.1:8000", "triton:///m", "triton://h:1/a/b"):
        with pytest.raises(ToolkitError, match="triton://HOST:PORT/MODEL"):
            parse_triton_artifact(bad)
    closed = f"triton://127.0.0.1:{free_port()}/m"
    with pytest.raises(ToolkitError, match="no answer from the Triton server"):
        with open_backend(closed):
            pass
    with pytest.raises(ToolkitError, match="frame model"):
        meta_from_config({"parameters": {"nonlocalnet": {"string_value": "{}"}, "role": {"string_value": "frame"}}}, "x")
    with pytest.raises(ToolkitError, match="no toolkit metadata"):
        meta_from_config({"parameters": {}}, "x")
    with pytest.raises(ToolkitError, match="--url and --triton-model go together"):
        evaluate(["--data", str(tmp_path), "--reference", VARIANT, "--url", "http://127.0.0.1:1", "--out", str(tmp_path)])


def test_serve_refuses_models_whose_backend_the_server_lacks(tiny, tmp_path):  # noqa: F811
    from apps.serve import check_backends, main, repo_models

    write_repository([tiny["onnx"]], tmp_path / "repo", RepoOptions(frame_model=False), **QUIET)
    (tmp_path / "backends/python").mkdir(parents=True)
    models = repo_models(tmp_path / "repo")
    assert models == [("tiny_cityscapes_64x128", "onnxruntime_onnx")]
    with pytest.raises(ToolkitError, match="needs Triton's onnxruntime backend.*--platform python"):
        check_backends(models, tmp_path / "backends")
    with pytest.raises(ToolkitError, match="nothing to serve"):
        main([])
    with pytest.raises(ToolkitError, match="holds no model"):
        repo_models(tmp_path / "backends")


def test_serving_path_imports_no_torch():
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import sys\nimport runtime.backends.triton_backend, apps.serve, apps.serve_load\n"
            "import runtime.triton.repo, runtime.triton.server, runtime.triton.onnx_batch\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_failed_repository_leaves_nothing_and_clashes_are_refused_first(tiny, tmp_path):  # noqa: F811
    from apps.to_triton import main

    out = tmp_path / "repo"
    with pytest.raises(ToolkitError, match="artifact not found"):          # a good artifact, then a missing one
        main(["--artifacts", str(tiny["onnx"]), str(tmp_path / "missing.onnx"), "--out", str(out)])
    twin = tmp_path / "elsewhere" / tiny["onnx"].name
    twin.parent.mkdir()
    shutil.copy(tiny["onnx"], twin)
    with pytest.raises(ToolkitError, match="same Triton model name"):
        main(["--artifacts", str(tiny["onnx"]), str(twin), "--out", str(out)])
    assert _listing(tmp_path) == ["elsewhere"]                          # no model folder, no temporary

    def refuse(configs):
        assert len(configs) == 2 and all(c.is_file() for c in configs)
        raise ToolkitError("a config.pbtxt does not parse with Triton's model_config.proto")

    with pytest.raises(ToolkitError, match="does not parse"):
        write_repository([tiny["onnx"]], out, RepoOptions(), check=refuse, **QUIET)
    assert _listing(tmp_path) == ["elsewhere"]                          # written, but not checked: not placed


def test_an_existing_out_is_refused_without_force_and_replaced_whole_with_it(tiny, tmp_path, capsys):  # noqa: F811
    from apps.to_triton import main
    from apps.cli import run_cli

    out = tmp_path / "repo"
    assert main(["--artifacts", str(tiny["labels_onnx"]), "--out", str(out), "--max-batch", "0"]) == 0
    old = _listing(out)
    capsys.readouterr()
    assert run_cli(main, ["--artifacts", str(tiny["onnx"]), "--out", str(out), "--max-batch", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--force" in err and "--out" in err
    assert _listing(out) == old                                         # untouched
    assert main(["--artifacts", str(tiny["onnx"]), "--out", str(out), "--max-batch", "0", "--force"]) == 0
    models = [e["model"] for e in json.loads((out / "repository.json").read_text())["models"]]
    assert _listing(out) == sorted(models + ["repository.json"]) and "tiny_cityscapes_64x128" in models
    assert _listing(tmp_path) == ["repo"]                               # the old repository went as a whole


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_sigkill_mid_repository_leaves_nothing_servable(tiny, tmp_path, capsys):  # noqa: F811
    import signal

    from apps.to_triton import main
    from test_fileio import PAUSE, kill_at_marker

    out = tmp_path / "repo"
    argv = ["--artifacts", str(tiny["onnx"]), str(tiny["labels_onnx"]), "--out", str(out), "--max-batch", "0"]
    code = PAUSE + ("import runpy\nimport runtime.triton.repo as repo\nreal = repo.write_frame_model\n"
                    "def first_model_written(*a, **k):\n"
                    "    name = real(*a, **k)\n"
                    f"    pause({str(tmp_path / 'marker')!r})\n"
                    "repo.write_frame_model = first_model_written\n"
                    f"sys.argv = ['export/to_triton.py', *{argv!r}]\n"
                    "runpy.run_path('export/to_triton.py', run_name='__main__')\n")
    assert kill_at_marker(code, tmp_path / "marker") == -signal.SIGKILL
    assert not out.exists()                                             # nothing Triton could load
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".repo.")]
    assert len(stale) == 1 and (stale[0] / "tiny_cityscapes_64x128_frame" / "config.pbtxt").is_file()
    assert main(argv) == 0
    assert _listing(tmp_path) == ["marker", "repo"] and f"removed {stale[0]}" in capsys.readouterr().err
    assert len(json.loads((out / "repository.json").read_text())["models"]) == 4


def test_a_port_outside_1_to_65535_is_an_error_not_8000(tmp_path, capsys):
    from apps.evaluate import main as evaluate
    from runtime.triton.client import split_url

    assert split_url("http://127.0.0.1") == ("127.0.0.1", 8000) and split_url("h:8001") == ("h", 8001)
    for bad in ("http://127.0.0.1:0", "127.0.0.1:0", "http://h:65536", "http://h:99999", "http://h:x"):
        with pytest.raises(ToolkitError, match="bad port in Triton URL"):
            split_url(bad)
    with pytest.raises(ToolkitError, match="bad port in Triton URL 'http://127.0.0.1:0'"):
        with open_backend("triton://127.0.0.1:0/m"):
            pass
    from apps.cli import run_cli

    argv = ["--data", str(tmp_path), "--reference", VARIANT, "--url", "http://127.0.0.1:0", "--triton-model", "m",
            "--out", str(tmp_path / "r")]
    assert run_cli(evaluate, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad port in Triton URL") and err.count("\n") == 1


FAKE_PB_UTILS = '''
class TritonError(Exception):
    pass


class Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


class InferenceResponse:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error = output_tensors, error


def get_input_tensor_by_name(request, name):
    return request[name]
'''

RUN_TILE_MODEL = '''
import importlib.util, json, sys
import numpy as np
import triton_python_backend_utils as pb

repo, name, config, x = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), np.load(sys.argv[4])
spec = importlib.util.spec_from_file_location("model", f"{repo}/{name}/1/model.py")
model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model)
tile = model.TritonPythonModel()
tile.initialize({"model_config": json.dumps(config), "model_repository": f"{repo}/{name}", "model_version": "1"})
responses = tile.execute([{config["input"][0]["name"]: pb.Tensor("input", x[i:i + 1])} for i in range(len(x))])
np.save(sys.argv[5], np.concatenate([r.output_tensors[0].as_numpy() for r in responses]))
print(sys.modules["runtime.loaders"].__file__)
'''


def test_python_tile_model_loads_its_session_through_the_copied_loader(tiny, tmp_path):
    """The Python-backend tile model, run as Triton's stub would (its own folder, a stand-in
    triton_python_backend_utils, nothing of the toolkit on the path): its ONNX Runtime session comes
    from the runtime/loaders.py copied beside it, and its outputs are the artifact's."""
    import os
    import subprocess
    import sys

    import onnx

    opts = RepoOptions(platform="python", max_batch=4, frame_model=False, ort_threads=1)
    write_repository([tiny["onnx"]], tmp_path / "repo", opts, **QUIET)
    version = tmp_path / "repo/tiny_cityscapes_64x128/1"
    assert sorted(p.name for p in (version / "runtime").iterdir()) == ["__init__.py", "errors.py", "loaders.py"]
    graph = onnx.load(str(version / "model.onnx")).graph
    config = {"parameters": {"ort_threads": {"string_value": "1"}}, "max_batch_size": 4,
              "input": [{"name": graph.input[0].name}], "output": [{"name": graph.output[0].name}]}
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "triton_python_backend_utils.py").write_text(FAKE_PB_UTILS)
    (stub / "run.py").write_text(RUN_TILE_MODEL)
    x = np.random.default_rng(2).normal(size=(2, 3, 64, 128)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}     # the toolkit is not on the path
    done = subprocess.run([sys.executable, str(stub / "run.py"), str(tmp_path / "repo"), "tiny_cityscapes_64x128",
                           json.dumps(config), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          cwd=stub, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(version / "runtime" / "loaders.py")
    with open_backend(str(tiny["onnx"]), backend="onnxruntime", threads=1) as backend:
        expected = np.concatenate([backend(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)


IMPORT_MODEL = '''
import importlib.util, sys

spec = importlib.util.spec_from_file_location("model", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print("\\n".join(m.__file__ for name, m in sorted(sys.modules.items()) if name.split(".")[0] == "runtime"))
'''


def test_python_models_import_with_only_the_runtime_files_copied_beside_them(tiny, tmp_path):
    """The frame and tile models' own imports (the tiler's, the loader's) resolve inside their folder:
    a runtime module that imports one more file fails here, not in a Triton server."""
    import os
    import subprocess
    import sys

    write_repository([tiny["onnx"]], tmp_path / "repo", RepoOptions(platform="python"), **QUIET)
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "triton_python_backend_utils.py").write_text(FAKE_PB_UTILS)
    (stub / "import_model.py").write_text(IMPORT_MODEL)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}     # the toolkit is not on the path
    for name in ("tiny_cityscapes_64x128", "tiny_cityscapes_64x128_frame"):
        version = tmp_path / "repo" / name / "1"
        done = subprocess.run([sys.executable, str(stub / "import_model.py"), str(version / "model.py")], cwd=stub,
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        loaded = done.stdout.split()
        assert loaded and all(f.startswith(str(version / "runtime")) for f in loaded), loaded
