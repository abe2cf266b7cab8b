"""Model zoo: architecture identical to the released checkpoints, loading, conversion, download."""
from __future__ import annotations

import http.server
from pathlib import Path
import threading

import numpy as np
import pytest
import torch

from models import create_model
from models.checkpoints import convert_mmseg, download, load_checkpoint, save_checkpoint
from models.nonlocalnet import NonLocalNet
from runtime.zoo import VARIANTS, get_variant
from runtime.errors import ToolkitError


def meta_model(name: str) -> NonLocalNet:
    """Build a variant on the meta device: shapes only, no memory, no init cost."""
    with torch.device("meta"):
        return NonLocalNet(**get_variant(name).model_kwargs())


def n_params(model: torch.nn.Module, prefix: str = "") -> int:
    return sum(p.numel() for k, p in model.named_parameters() if k.startswith(prefix))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_builds(name):
    model = meta_model(name)
    v = get_variant(name)
    assert model.decoder[4].out_channels == v.num_classes == len(v.dataset.class_names) == len(v.dataset.palette)
    if v.published_miou is not None:
        assert v.checkpoint_url.endswith(f"nonlocalnet_resnet{v.depth}os{v.output_stride}_{v.dataset.name}.pth")


@pytest.mark.parametrize("name,entries,total", [("r50os8_cityscapes", 370, 52_388_486),
                                                ("r50os16_cityscapes", 370, 52_388_486),
                                                ("r101os8_cityscapes", 676, 71_380_614)])
def test_state_dict_matches_release(name, entries, total):
    model = meta_model(name)
    sd = model.state_dict()
    assert len(sd) == entries
    assert n_params(model) == total
    assert n_params(model, "backbone_net") == (23_527_264 if "r50" in name else 42_519_392)
    expected = {"backbone_net.stem.0.weight": (32, 3, 3, 3), "backbone_net.stem.3.weight": (32, 32, 3, 3),
                "backbone_net.stem.6.weight": (64, 32, 3, 3), "backbone_net.stem.7.num_batches_tracked": (),
                "backbone_net.layer1.0.downsample.0.weight": (256, 64, 1, 1),
                "backbone_net.layer4.2.conv3.weight": (2048, 512, 1, 1),
                "conv_before_nl.0.weight": (512, 2048, 3, 3), "nl_block.g.0.weight": (256, 512, 1, 1),
                "nl_block.theta.0.bias": (256,), "nl_block.phi.0.weight": (256, 512, 1, 1),
                "nl_block.conv_out.0.weight": (512, 256, 1, 1), "nl_block.conv_out.1.running_var": (512,),
                "conv_after_nl.0.weight": (512, 512, 3, 3), "decoder.0.weight": (512, 2560, 3, 3),
                "decoder.4.weight": (19, 512, 1, 1), "decoder.4.bias": (19,),
                "auxiliary_decoder.0.weight": (512, 1024, 3, 3), "auxiliary_decoder.4.weight": (19, 512, 1, 1)}
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith(("backbone_net.conv1", "backbone_net.fc", "backbone_net.bn1")) for k in sd)
    head = {"conv_before_nl": 9_438_208, "nl_block": 526_080, "conv_after_nl": 2_360_320,
            "decoder": 11_807_251, "auxiliary_decoder": 4_729_363}
    for prefix, count in head.items():
        assert n_params(model, prefix + ".") == count, prefix


def test_class_count_changes_head_only():
    assert n_params(meta_model("r50os8_ade20k")) == 52_388_486 + 2 * 513 * (150 - 19)


@pytest.mark.parametrize("name,stride", [("r50os8_cityscapes", 8), ("r50os16_cityscapes", 16),
                                         ("r101os16_voc", 16), ("r18os8_cityscapes", 8),
                                         ("r18os16_cityscapes", 16)])
def test_feature_stride_and_dilations(name, stride):
    model = meta_model(name)
    c3, c4 = model.backbone_net(torch.empty(1, 3, 512, 1024, device="meta"))
    assert c4.shape[2:] == (512 // stride, 1024 // stride)
    layer4 = model.backbone_net.layer4
    d = [b.conv2.dilation[0] if hasattr(b, "conv3") else b.conv1.dilation[0] for b in layer4]
    expected = [2, 4, 4] if stride == 8 else [1, 2, 2]   # contracted first block, then the stage dilation
    assert d == expected[:len(layer4)]


def test_forward_shapes_eval_and_train():
    model = create_model("tiny_cityscapes")
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert model(x).shape == (2, 19, 64, 96)
    model.train()
    out = model(x)
    assert set(out) == {"out", "aux"} and out["aux"].shape == (2, 19, 64, 96)


def test_unknown_variant_suggests():
    with pytest.raises(ToolkitError, match="did you mean r50os8_cityscapes"):
        get_variant("r50os8_citscapes")


def test_checkpoint_round_trip_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny_cityscapes")
    model.train()
    model(torch.randn(2, 3, 64, 64))    # move BN statistics off their defaults
    path = save_checkpoint(tmp_path / "ck.pth", model, cur_iter=7)
    loaded = create_model("tiny_cityscapes", checkpoint=path)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.load(path, weights_only=True)["cur_iter"] == 7
    model = model.to(memory_format=torch.channels_last)             # as models.train trains it
    saved = torch.load(save_checkpoint(tmp_path / "cl.pth", model), weights_only=True)["model"]
    assert saved["decoder.0.weight"].is_contiguous()
    assert torch.equal(saved["decoder.0.weight"], model.state_dict()["decoder.0.weight"])
    assert not list(tmp_path.glob(".*tmp"))


def test_release_without_aux_and_wrong_variant(tmp_path):
    model = create_model("tiny_cityscapes")
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("auxiliary_decoder")}
    load_checkpoint(create_model("tiny_cityscapes"), {"model": sd})   # aux may be absent
    sd["decoder.4.weight"] = torch.zeros(21, 32, 1, 1)
    with pytest.raises(ToolkitError, match=r"decoder\.4\.weight \(21, 32, 1, 1\) vs model \(19, 32, 1, 1\)"):
        load_checkpoint(create_model("tiny_cityscapes"), {"model": sd})
    with pytest.raises(ToolkitError, match="missing keys"):
        load_checkpoint(create_model("tiny_cityscapes"), {"model": {"decoder.4.bias": torch.zeros(19)}})


def to_mmseg_names(sd: dict) -> dict:
    """The inverse of the key map, as mmsegmentation names its NonLocal R-D8 checkpoints."""
    rules = [("backbone_net.", "backbone."), ("conv_before_nl.0.", "decode_head.convs.0.conv."),
             ("conv_before_nl.1.", "decode_head.convs.0.bn."), ("conv_after_nl.0.", "decode_head.convs.1.conv."),
             ("conv_after_nl.1.", "decode_head.convs.1.bn."), ("nl_block.conv_out.0.", "decode_head.nl_block.conv_out.conv."),
             ("nl_block.conv_out.1.", "decode_head.nl_block.conv_out.bn."), ("decoder.0.", "decode_head.conv_cat.conv."),
             ("decoder.1.", "decode_head.conv_cat.bn."), ("decoder.4.", "decode_head.conv_seg.")]
    rules += [(f"nl_block.{n}.0.", f"decode_head.nl_block.{n}.conv.") for n in ("g", "theta", "phi")]
    out = {}
    for k, v in sd.items():
        if k.startswith("auxiliary_decoder"):
            continue
        for a, b in rules:
            if k.startswith(a):
                k = b + k[len(a):]
                break
        out[k] = v
    out["auxiliary_head.convs.0.conv.weight"] = torch.zeros(256, 32, 3, 3)   # mmseg's 256-ch aux head
    return out


def test_mmseg_key_map(tmp_path):
    src = create_model("tiny_cityscapes")
    mm = to_mmseg_names(src.state_dict())
    assert "decode_head.conv_seg.weight" in mm and "decode_head.nl_block.theta.conv.bias" in mm
    converted = convert_mmseg(mm)
    assert "auxiliary_head.convs.0.conv.weight" not in converted
    torch.save({"meta": {}, "state_dict": mm, "optimizer": {}}, tmp_path / "mm.pth")
    model = create_model("tiny_cityscapes", checkpoint=tmp_path / "mm.pth")
    assert torch.equal(model.decoder[4].weight, src.decoder[4].weight)
    assert torch.equal(model.nl_block.theta[0].bias, src.nl_block.theta[0].bias)


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b"x" * 100_000

    def do_GET(self):   # noqa: N802 (http.server naming)
        body = self.payload if self.path != "/short.pth" else self.payload[:1000]
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_from_local_server(server, tmp_path):
    import hashlib
    good = hashlib.sha256(_Handler.payload).hexdigest()
    path = download(f"{server}/model.pth", tmp_path, sha256=good, progress=False)
    assert path.read_bytes() == _Handler.payload
    assert download(f"{server}/model.pth", tmp_path, sha256=good, progress=False) == path   # cached
    with pytest.raises(ToolkitError, match="incomplete"):
        download(f"{server}/short.pth", tmp_path, progress=False)
    with pytest.raises(ToolkitError, match="sha256 mismatch"):
        download(f"{server}/other.pth", tmp_path, sha256="0" * 64, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]   # nothing half-written


def test_download_offline_says_where_to_put_file(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ToolkitError, match=f"put it at {tmp_path}/x.pth"):
        download(f"http://127.0.0.1:{port}/x.pth", tmp_path, progress=False, timeout=2)


def _closed_port_url(name: str) -> str:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def test_offline_release_message_is_the_same_everywhere(tmp_path, monkeypatch, capsys):
    """create_model, segment (via the PyTorch backend) and export all say where the file goes by hand."""
    import dataclasses

    import runtime.zoo as zoo
    from apps.to_onnx import main as export_main
    from apps.cli import run_cli
    from apps.segment import main as segment_main

    url = _closed_port_url("tiny_release.pth")
    variant = dataclasses.replace(zoo.get_variant("tiny_cityscapes"), checkpoint_url=url)
    monkeypatch.setitem(zoo.VARIANTS, "tiny_cityscapes", variant)
    monkeypatch.setenv("NONLOCALNET_CACHE", str(tmp_path / "cache"))
    fix = f"download {url} by hand and put it at {tmp_path / 'cache' / 'tiny_release.pth'}, or pass --checkpoint PATH"
    with pytest.raises(ToolkitError) as info:
        create_model("tiny_cityscapes", checkpoint="pretrained")
    assert info.value.fix == fix and "cannot fetch the released weights of tiny_cityscapes" in str(info.value)
    image = tmp_path / "f.png"
    import cv2
    cv2.imwrite(str(image), np.zeros((64, 128, 3), np.uint8))
    assert run_cli(segment_main, [str(image), "--model", "tiny_cityscapes", "--checkpoint", "pretrained",
                                  "--out", str(tmp_path / "seg")]) == 2
    assert f"(fix: {fix})" in capsys.readouterr().err
    assert run_cli(export_main, ["--model", "tiny_cityscapes", "--out", str(tmp_path / "art")]) == 2
    assert f"(fix: {fix}, or --random-init for a dry run of the pipeline)" in capsys.readouterr().err


# -- mmengine Runner checkpoints (mmsegmentation 1.x training output) -------------------------------
@pytest.fixture()
def fake_mmengine(monkeypatch, tmp_path):
    """A stand-in ``mmengine`` package with a HistoryBuffer (numpy arrays inside, as the real one)
    and a ``mark`` function whose call would leave a file: proof of whether unpickling ran code."""
    import sys
    import types

    names = ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer")
    mods = {n: types.ModuleType(n) for n in names}
    hb = mods["mmengine.logging.history_buffer"]

    class HistoryBuffer:
        def __init__(self, values):
            self._log_history = np.asarray(values, np.float64)
            self._count_history = np.ones(len(values))
            self.max_length = 1000000

    class CodeRunner:
        def __reduce__(self):
            return hb.mark, (str(tmp_path / "code_ran"),)

    def mark(path):
        Path(path).write_text("unpickling executed code")
        return path

    for obj in (HistoryBuffer, CodeRunner, mark):
        obj.__module__, obj.__qualname__ = hb.__name__, obj.__name__
        setattr(hb, obj.__name__, obj)
    for n, m in mods.items():
        monkeypatch.setitem(sys.modules, n, m)
    return hb


def mmengine_checkpoint(hb, state_dict: dict) -> dict:
    """The layout mmengine's Runner.save_checkpoint writes."""
    return {"meta": {"mmengine_version": "0.10.4", "seed": np.int64(0), "epoch": 0, "iter": 80000,
                     "dataset_meta": {"classes": ("road", "sidewalk")}},
            "state_dict": state_dict,
            "message_hub": {"log_scalars": {"train/loss": hb.HistoryBuffer([0.5, 0.4])},
                            "runtime_info": {"iter": 80000, "hook": hb.CodeRunner()},
                            "resumed_keys": {"iter": True}},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
            "param_schedulers": [{"eta_min": 1e-4, "power": 0.9}]}


def test_mmengine_runner_checkpoint_loads_its_state_dict_without_running_code(fake_mmengine, tmp_path):
    src = create_model("tiny_cityscapes")
    path = tmp_path / "iter_80000.pth"
    torch.save(mmengine_checkpoint(fake_mmengine, to_mmseg_names(src.state_dict())), path)
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(path, weights_only=True)          # what a plain weights-only load says
    model = create_model("tiny_cityscapes", checkpoint=path)
    for (k, a), b in zip(model.state_dict().items(), src.state_dict().values()):
        if not k.startswith("auxiliary_decoder"):
            assert torch.equal(a, b), k
    assert not (tmp_path / "code_ran").exists()


def test_pickled_objects_where_weights_belong_are_refused_safely(fake_mmengine, tmp_path):
    sd = create_model("tiny_cityscapes").state_dict()
    cases = {"module.pth": create_model("tiny_cityscapes"),                      # torch.save(model)
             "object_in_sd.pth": {"state_dict": {**sd, "extra": fake_mmengine.CodeRunner()}},
             "runner_object.pth": {"model": fake_mmengine.HistoryBuffer([1.0])}}
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(ToolkitError, match="cannot be read safely: .*pickled Python objects") as info:
            create_model("tiny_cityscapes", checkpoint=tmp_path / name)
        assert "truncated" not in str(info.value) and "model.state_dict()" in info.value.fix, name
    assert not (tmp_path / "code_ran").exists()
    good = tmp_path / "good.pth"
    torch.save({"model": sd}, good)
    (tmp_path / "cut.pth").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ToolkitError, match="cannot read checkpoint .* truncated"):
        create_model("tiny_cityscapes", checkpoint=tmp_path / "cut.pth")
