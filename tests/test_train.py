"""Training: augmentation pipeline, a loss-lowering step, exact resume, CLI errors, 2-process gloo."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import transforms as T
from runtime.zoo import get_variant
from runtime.errors import ToolkitError

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = get_variant("tiny_cityscapes").dataset.mean, get_variant("tiny_cityscapes").dataset.std


# ----------------------------------------------------------------------------- transforms

def test_rescale_size_keeps_ratio_into_base_size():
    assert T.rescale_size(1024, 2048, (2048, 1024), 1.0) == (1024, 2048)
    assert T.rescale_size(1024, 2048, (2048, 1024), 0.5) == (512, 1024)
    assert T.rescale_size(256, 512, (2048, 1024), 2.0) == (2048, 4096)
    assert T.rescale_size(375, 500, (2048, 512), 1.0) == (512, 683)   # VOC: the short edge binds


def test_class_fraction_rule_excludes_ignore():
    lab = lambda *parts: np.concatenate([np.full(n, v, np.uint8) for v, n in parts])  # noqa: E731
    assert T.class_fraction_ok(lab((0, 60), (1, 40)), 0.75, 255)
    assert not T.class_fraction_ok(lab((0, 80), (1, 20)), 0.75, 255)
    assert not T.class_fraction_ok(lab((0, 60), (255, 40)), 0.75, 255)          # one class only
    assert not T.class_fraction_ok(lab((0, 70), (1, 20), (255, 10)), 0.75, 255)  # 70/90 > 0.75
    assert not T.class_fraction_ok(lab((0, 75), (1, 25)), 0.75, 255)            # strictly below


def test_random_crop_retries_until_no_class_dominates():
    label = np.zeros((200, 200), np.uint8)
    label[:, 150:] = 1                     # class 1 only in the right quarter
    image = np.zeros((200, 200, 3), np.uint8)
    ok_with, ok_without = 0, 0
    for seed in range(200):
        _, a = T.random_crop(image, label, (100, 100), np.random.default_rng(seed), 0.75)
        _, b = T.random_crop(image, label, (100, 100), np.random.default_rng(seed), 1.0)
        assert a.shape == b.shape == (100, 100)
        ok_with += T.class_fraction_ok(a, 0.75, 255)
        ok_without += T.class_fraction_ok(b, 0.75, 255)
    # a crop passes only if x0 >= 76 (p ~ 0.25 per draw): ~94% after 10 retries vs ~25% with none
    assert ok_with > 170 and ok_without < 80


def test_crop_of_single_class_image_gives_up_after_tries():
    label = np.full((50, 300), 3, np.uint8)
    img, lab = T.random_crop(np.zeros((50, 300, 3), np.uint8), label, (64, 128), np.random.default_rng(0))
    assert lab.shape == (50, 128) and img.shape == (50, 128, 3)   # smaller than the crop: not padded yet


def test_pipeline_output_size_and_pad_values():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (60, 80), dtype=np.uint8)
    tf = T.TrainTransform(crop=(64, 128), base_size=(80, 60), mean=MEAN, std=STD, ratio_range=(0.5, 0.5))
    chw, lab = tf(image, label, np.random.default_rng(1))
    assert chw.shape == (3, 64, 128) and chw.dtype == np.float32 and lab.shape == (64, 128)
    # 0.5 x (80x60) -> 40x30: everything outside the top-left 30x40 is padding
    assert np.all(chw[:, 30:, :] == 0) and np.all(chw[:, :, 40:] == 0)
    assert np.all(lab[30:, :] == 255) and np.all(lab[:, 40:] == 255)
    assert lab[:30, :40].max() < 19


def test_pipeline_large_image_is_cropped_exactly():
    image = np.zeros((256, 512, 3), np.uint8)
    label = (np.arange(512)[None, :] // 32 % 19).astype(np.uint8).repeat(256, 0)
    tf = T.TrainTransform(crop=(64, 128), base_size=(512, 256), mean=MEAN, std=STD)
    for seed in range(5):
        chw, lab = tf(image, label, np.random.default_rng(seed))
        assert chw.shape == (3, 64, 128) and lab.shape == (64, 128)


def _coded_pair(h: int = 40, w: int = 90) -> tuple[np.ndarray, np.ndarray]:
    """Red channel = column index; label = column index // 10 (so the label follows the pixels)."""
    x = np.arange(w, dtype=np.uint8)
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = x[None, :]
    return image, (x // 10).astype(np.uint8)[None, :].repeat(h, 0)


def test_flip_moves_image_and_label_together():
    from runtime.preprocess import denormalize

    image, label = _coded_pair()
    tf = T.TrainTransform(crop=(40, 90), base_size=(90, 40), mean=MEAN, std=STD, ratio_range=(1.0, 1.0),
                          photometric=False, cat_max_ratio=1.0)
    flipped = 0
    for seed in range(20):
        chw, lab = tf(image, label, np.random.default_rng(seed))
        red = denormalize(chw, MEAN, STD)[..., 0].astype(np.int64)
        np.testing.assert_array_equal(lab, red // 10)
        flipped += int(red[0, 0] == 89)
        assert red[0, 0] in (0, 89)
    assert 3 <= flipped <= 17


def test_photometric_distortion_is_seeded_uint8():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    a = T.photometric_distortion(image, np.random.default_rng(5))
    b = T.photometric_distortion(image, np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.shape == image.shape
    np.testing.assert_array_equal(a, b)
    changed = [not np.array_equal(T.photometric_distortion(image, np.random.default_rng(s)), image)
               for s in range(10)]
    assert sum(changed) >= 7


def test_iteration_batches_shard_epochs_and_resume_offset():
    full = list(T.IterationBatches(10, 3, 0, 1, seed=0, start=0, total=6))
    draws = [d for batch in full for _, d in batch]
    assert draws == list(range(18))
    assert sorted(i for batch in full[:4] for i, d in batch if d < 10) == list(range(10))  # epoch 0
    ranks = [list(T.IterationBatches(10, 2, r, 2, seed=0, start=0, total=5)) for r in (0, 1)]
    seen = sorted(i for r in ranks for batch in r for i, _ in batch)
    assert seen == sorted(list(range(10)) * 2)  # two epochs over both ranks, each index once per epoch
    assert list(T.IterationBatches(10, 3, 0, 1, seed=0, start=4, total=6)) == full[4:]


# ----------------------------------------------------------------------------- training

def test_poly_lr_schedule():
    from models.trainer import poly_lr

    assert poly_lr(0.01, 0, 100) == pytest.approx(0.01)
    assert poly_lr(0.01, 100, 100) == pytest.approx(1e-4)
    assert poly_lr(0.01, 50, 100) == pytest.approx((0.01 - 1e-4) * 0.5 ** 0.9 + 1e-4)


def test_train_step_lowers_loss_on_fixed_batch():
    from models import create_model
    from models.trainer import Runtime, train_step

    torch.manual_seed(0)
    model = create_model("tiny_cityscapes").train()
    rng = np.random.default_rng(0)
    label = torch.from_numpy(rng.integers(0, 4, (2, 64, 128))).long()
    label[:, :8] = 255
    colours = torch.tensor([[1.5, -1, 0], [-1, 1.5, 0], [0, -1, 1.5], [0.5, 0.5, -1]])
    image = colours[label.clamp(max=3)].permute(0, 3, 1, 2).contiguous()
    image = image + 0.1 * torch.randn_like(image)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    rt = Runtime(0, 1, 0, torch.device("cpu"), None)
    losses = [train_step(model, (image, label), opt, None, rt, 0.4, 255) for _ in range(6)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.85 * losses[0]


def test_ohem_keeps_hard_pixels_and_min_kept():
    from models.trainer import ohem_cross_entropy

    # 6 pixels, 2 classes; true-class probabilities sigmoid(z): 0.12, 0.27, 0.5, 0.73, 0.88, (ignored)
    z = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0, 0.0])
    logits = torch.stack([torch.zeros(6), z]).reshape(1, 2, 1, 6)
    label = torch.tensor([[[1, 1, 1, 1, 1, 255]]])
    pixel = torch.nn.functional.softplus(-z)                  # -log sigmoid(z)
    got = ohem_cross_entropy(logits, label, 255, thresh=0.6, min_kept=1)
    assert got == pytest.approx(float(pixel[:3].mean()))     # p <= 0.6: the three hardest
    got = ohem_cross_entropy(logits, label, 255, thresh=0.6, min_kept=4)
    assert got == pytest.approx(float(pixel[:4].mean()))     # min_kept raises the threshold
    plain = torch.nn.functional.cross_entropy(logits, label, ignore_index=255)
    assert ohem_cross_entropy(logits, label, 255, thresh=1.0, min_kept=1) == pytest.approx(float(plain))
    assert float(ohem_cross_entropy(logits, torch.full_like(label, 255), 255, 0.7, 10)) == 0.0


def test_train_step_with_ohem_lowers_loss():
    from models import create_model
    from models.trainer import Runtime, train_step

    torch.manual_seed(0)
    model = create_model("tiny_cityscapes").train()
    label = torch.from_numpy(np.random.default_rng(1).integers(0, 3, (2, 64, 128))).long()
    image = torch.eye(3)[label].permute(0, 3, 1, 2).contiguous() + 0.1 * torch.randn(2, 3, 64, 128)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rt = Runtime(0, 1, 0, torch.device("cpu"), None)
    losses = [train_step(model, (image, label), opt, None, rt, 0.4, 255, (0.7, 1000)) for _ in range(6)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from samples.dataset import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, size=(64, 128), n_train=6, n_val=2, workers=1, progress=False)
    return root


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", "tiny_cityscapes", "--data", str(data), "--out", str(out), "--crop", "64x128",
            "--base-size", "128x64", "--batch-size", "2", "--workers", "0", "--amp", "off",
            "--iters", "4", "--val-every", "0", "--save-every", "2", "--log-every", "1", *extra]


def test_resume_continues_bit_exactly(synth, tmp_path):
    from apps.train import main

    assert main(_args(synth, tmp_path / "a")) == 0
    # run b stops after its first iteration (time limit 0), then resumes to the end
    assert main(_args(synth, tmp_path / "b", "--max-minutes", "0")) == 0
    stopped = torch.load(tmp_path / "b" / "latest.pth", weights_only=True)
    assert stopped["cur_iter"] == 1
    assert main(_args(synth, tmp_path / "b", "--resume")) == 0
    a = torch.load(tmp_path / "a" / "latest.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "latest.pth", weights_only=True)
    assert a["cur_iter"] == b["cur_iter"] == 4
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    losses = lambda d: [r["loss"] for r in map(json.loads, open(d / "log.jsonl")) if "loss" in r]  # noqa
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_checkpoint_loads_with_create_model_and_val_writes_best(synth, tmp_path):
    from models import create_model
    from apps.train import main

    assert main(_args(synth, tmp_path, "--iters", "2", "--val-every", "2")) == 0
    records = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    val = [r for r in records if r.get("val")]
    assert len(val) == 1 and 0.0 <= val[0]["miou"] <= 1.0
    best = torch.load(tmp_path / "best.pth", weights_only=True)
    assert best["cur_iter"] == 2 and best["miou"] == val[0]["miou"] and "optimizer" not in best
    model = create_model("tiny_cityscapes", checkpoint=tmp_path / "latest.pth")
    assert torch.equal(model.state_dict()["decoder.4.weight"],
                       torch.load(tmp_path / "latest.pth", weights_only=True)["model"]["decoder.4.weight"])


def test_cli_user_errors(synth, tmp_path):
    from apps.train import main

    with pytest.raises(ToolkitError, match="--crop"):
        main(_args(synth, tmp_path, "--crop", "64by128"))
    with pytest.raises(ToolkitError, match="not found"):
        main(_args(synth, tmp_path, "--resume", str(tmp_path / "missing.pth")))
    torch.save({"model": {}}, tmp_path / "weights.pth")
    with pytest.raises(ToolkitError, match="cannot be resumed"):
        main(_args(synth, tmp_path, "--resume", str(tmp_path / "weights.pth")))
    with pytest.raises(ToolkitError, match="iters"):
        main(_args(synth, tmp_path, "--iters", "0"))
    with pytest.raises(ToolkitError, match="--ohem-thresh"):
        main(_args(synth, tmp_path, "--ohem-thresh", "1.5"))
    proc = subprocess.run([sys.executable, "-m", "models.train", *_args(synth, tmp_path, "--model", "r18os9")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown model variant")


def test_stop_flag_first_signal_stops_gracefully_second_aborts():
    from models.trainer import StopFlag

    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.set
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_torchrun_two_process_gloo_smoke(synth, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "models.train", *_args(synth, tmp_path, "--iters", "2", "--val-every", "2", "--threads", "1")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert records[0]["world"] == 2 and "per process" in records[0]["norm"]
    assert sum(1 for r in records if r.get("val")) == 1          # only rank 0 writes
    assert torch.load(tmp_path / "latest.pth", weights_only=True)["cur_iter"] == 2


# ----------------------------------------------------------------------------- interruption, resume errors

def _interrupt_after_first_step(monkeypatch, signum: int) -> None:
    """As if the user pressed Ctrl-C (or the system sent SIGTERM) during the first iteration."""
    import models.trainer as train

    real = train.train_step
    calls = []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "train_step", step)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_exits_nonzero_unfinished_and_resumes(synth, tmp_path, monkeypatch, capsys, signum, code):
    from apps.train import main
    from models.trainer import run_state

    _interrupt_after_first_step(monkeypatch, signum)
    assert main(_args(synth, tmp_path, "--save-every", "0")) == code
    assert "interrupted at iteration 1/4" in capsys.readouterr().out
    latest = torch.load(tmp_path / "latest.pth", weights_only=True)
    assert latest["cur_iter"] == 1 and latest["finished"] is False
    assert run_state(tmp_path) == ("unfinished", 1, 4)
    monkeypatch.undo()
    assert main(_args(synth, tmp_path, "--resume")) == 0
    assert run_state(tmp_path) == ("finished", 4, 4)
    end = [json.loads(line) for line in open(tmp_path / "log.jsonl") if '"end"' in line]
    assert [(r["end"], r["finished"], r["exit_code"]) for r in end] == [(1, False, code), (4, True, 0)]


def test_run_state_of_runs_before_the_finished_flag(tmp_path):
    from models.trainer import run_state

    assert run_state(tmp_path) == ("none", 0, 0)
    torch.save({"model": {}, "optimizer": {}, "cur_iter": 1500, "args": {"iters": 1500}}, tmp_path / "latest.pth")
    assert run_state(tmp_path) == ("finished", 1500, 1500)
    torch.save({"model": {}, "optimizer": {}, "cur_iter": 276, "args": {"iters": 1500}}, tmp_path / "latest.pth")
    assert run_state(tmp_path) == ("unfinished", 276, 1500)


class _Payload:
    """A pickled object in a checkpoint: weights_only loading must refuse it."""


def test_resume_from_truncated_or_pickled_checkpoint_is_one_line_error(synth, tmp_path):
    from apps.train import main

    assert main(_args(synth, tmp_path / "run", "--iters", "1")) == 0
    good = (tmp_path / "run" / "latest.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(good[: len(good) // 2])
    torch.save({"model": {}, "optimizer": {}, "cur_iter": 1, "hook": _Payload()}, tmp_path / "pickled.pth")
    for name in ("truncated.pth", "pickled.pth"):
        proc = subprocess.run([sys.executable, "-m", "models.train",
                               *_args(synth, tmp_path / "run", "--resume", str(tmp_path / name))],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.startswith(f"error: cannot read checkpoint {tmp_path / name}")
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_missing_data_folder_and_bad_threads(tmp_path, capsys):
    from apps.train import main

    with pytest.raises(ToolkitError, match="--data folder does not exist") as info:
        main(_args(tmp_path / "nowhere", tmp_path / "out"))
    assert "add a val split" not in str(info.value)
    for bad in ("0", "-2"):
        with pytest.raises(SystemExit) as stop:
            main(_args(tmp_path, tmp_path / "out", "--threads", bad))
        assert stop.value.code == 2 and "--threads" in capsys.readouterr().err
    for bad, message in (("2", "LO,HI"), ("a,b", "LO,HI"), ("1.5,0.75", "0 < LO <= HI"), ("0,1", "0 < LO <= HI"),
                         ("inf,inf", "HI <= 8"), ("0.5,inf", "HI <= 8"), ("nan,1", "0 < LO"), ("1,nan", "0 < LO"),
                         ("-1,2", "0 < LO"), ("0.5,1e300", "HI <= 8")):
        with pytest.raises(ToolkitError, match=message):
            main(_args(tmp_path, tmp_path / "out", f"--ratio-range={bad}"))


def test_ratio_range_reaches_the_transform(synth, tmp_path):
    from models.trainer import Runtime, build_loader
    from apps.train import parse_args
    from runtime.zoo import get_variant

    rt = Runtime(0, 1, 0, torch.device("cpu"), None)
    for extra, expected in (([], (0.5, 2.0)), (["--ratio-range", "0.75,1.5"], (0.75, 1.5)),
                            (["--preset", "synthetic"], (0.9, 1.2))):
        args = parse_args(_args(synth, tmp_path / "out", *extra))
        loader = build_loader(args, rt, get_variant("tiny_cityscapes"), 0)
        assert loader.dataset.transform.ratio_range == expected


# ----------------------------------------------------------------------------- what the log says

def test_amp_auto_says_what_runs(monkeypatch):
    from models.train_log import amp_choice

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert amp_choice("auto", cpu) == (None, "off (auto: no AMX or AVX512-BF16 usable on this CPU): FP32")
    assert "much slower than FP32" in amp_choice("bf16", cpu)[1]
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert amp_choice("auto", cpu) == (torch.bfloat16, "bf16 autocast (auto: AMX on this CPU)")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")        # oneDNN capped below its bf16 kernels
    assert amp_choice("auto", cpu)[0] is None
    assert amp_choice("off", cpu) == (None, "off (--amp off): FP32")


def test_log_names_amp_machine_and_projects_time(synth, tmp_path, capsys):
    from apps.train import main

    assert main(_args(synth, tmp_path, "--iters", "6")) == 0
    first = json.loads(open(tmp_path / "log.jsonl").readline())
    assert first["amp"] == "off (--amp off): FP32" and "threads" in first["machine"]
    assert first["kernels"].startswith("ATen ")
    out = capsys.readouterr().out
    assert "speed: " in out and "the remaining 1 iterations take about" in out
    records = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [r["iter"] for r in records if "projected_s" in r] == [5]


def test_progress_lines_at_a_steady_pace_without_a_terminal(capsys, tmp_path):
    from models.train_log import Progress, RunLog

    quiet = Progress(RunLog(tmp_path), start=0, total=100, every_s=3600.0, tty=False)
    steady = Progress(RunLog(tmp_path), start=0, total=100, every_s=0.0, tty=False)
    bar = Progress(RunLog(tmp_path), start=0, total=100, every_s=0.0, tty=True)
    for it in range(1, 4):
        for p in (quiet, steady, bar):
            p.update(it, 1.5, 0.01)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("iter ")]
    assert len(lines) == 2 and lines[-1].startswith("iter 3/100  loss 1.500") and "ETA" in lines[-1]


def test_step_time_times_warm_steps_of_a_variant(capsys):
    from apps.step_time import main

    assert main(["--model", "tiny_cityscapes", "--crop", "64x128", "--batch-size", "2", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "machine: " in out and "kernels: " in out
    steps = out.split("steps ")[1].split(" s;")[0].split()
    assert len(steps) == 2 and all(float(t) > 0 for t in steps) and "median" in out

