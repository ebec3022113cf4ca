"""Training end to end on a shrunken real config: outputs, determinism, resume, early stop."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from torch import nn

from mmaux.checkpoint import find_checkpoint
from mmaux.data.manifest import ManifestError
from mmaux.training import Callback, Trainer, TrainingInterrupted, epoch_batches, train


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model.safetensors"))


def _same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_writes_a_complete_run(make_cfg, synth_root):
    cfg = make_cfg()
    result = train(cfg)
    run = cfg.train.output_dir
    for name in (
        "config.yaml",
        "labels.json",
        "steps.jsonl",
        "epochs.jsonl",
        "model.safetensors",
        "metrics.json",
        "predictions_val.csv",
        "predictions_test.csv",
    ):
        assert (run / name).is_file(), name
    assert not (run / "checkpoint").exists()  # removed once complete
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) >= {
        "macro_f1",
        "weighted_f1",
        "accuracy",
        "per_class",
        "confusion_matrix",
    }
    assert metrics["global_step"] == result.global_step == 2 * (96 // 16)
    steps = [json.loads(x) for x in (run / "steps.jsonl").read_text().splitlines()]
    # every train.log_every_steps (10) optimizer steps and at each epoch's last step (6, 12)
    assert [s["step"] for s in steps] == [6, 10, 12]
    assert {"loss", "ce", "itc", "itm", "itm_acc", "logit_scale"} <= set(steps[0])
    epochs = [json.loads(x) for x in (run / "epochs.jsonl").read_text().splitlines()]
    assert len(epochs) == 2 and {"train_ce", "train_itc", "train_itm", "val_macro_f1"} <= set(
        epochs[0]
    )
    lines = (run / "predictions_test.csv").read_text().splitlines()
    assert len(lines) == 1 + 48 and lines[0].startswith("id,label,prediction,p_match_positive")
    # A checkpoint directory only ever holds safetensors and JSON: nothing to unpickle.


def test_log_points_average_the_steps_between_them_and_never_change_training(make_cfg, tmp_path):
    every = train(make_cfg(f"train.output_dir={tmp_path / 'a'}", "train.log_every_steps=1"))
    sparse = train(make_cfg(f"train.output_dir={tmp_path / 'b'}", "train.log_every_steps=4"))
    assert _same_weights(_weights(every.run_dir), _weights(sparse.run_dir))
    assert every.metrics["test"] == sparse.metrics["test"]
    rows = [json.loads(x) for x in (every.run_dir / "steps.jsonl").read_text().splitlines()]
    means = [json.loads(x) for x in (sparse.run_dir / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert [m["step"] for m in means] == [4, 6, 8, 12]  # log points and epoch ends
    for m, lo in zip(means, [0, 4, 6, 8], strict=True):
        interval = [r for r in rows if lo < r["step"] <= m["step"]]
        for key in ("loss", "ce", "itc", "itm", "itm_acc"):
            assert m[key] == pytest.approx(sum(r[key] for r in interval) / len(interval))
        assert m["logit_scale"] == interval[-1]["logit_scale"]  # the value after the step


def test_same_seed_same_result_and_seed_matters(make_cfg, tmp_path):
    a = train(make_cfg(f"train.output_dir={tmp_path / 'a'}"))
    b = train(make_cfg(f"train.output_dir={tmp_path / 'b'}"))
    c = train(make_cfg(f"train.output_dir={tmp_path / 'c'}", "train.seed=1"))
    assert a.metrics["test"] == b.metrics["test"]
    assert _same_weights(_weights(a.run_dir), _weights(b.run_dir))
    assert not _same_weights(_weights(a.run_dir), _weights(c.run_dir))


class StopAt(Callback):
    def __init__(self, step: int, use_signal: bool = False):
        self.step, self.use_signal = step, use_signal

    def on_step_end(self, trainer, step):
        if step == self.step:
            if self.use_signal:
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does
            else:
                trainer.request_stop()


@pytest.mark.parametrize(
    ("stop_step", "use_signal", "extra"),
    [
        (4, True, ()),  # mid-epoch, by a real SIGINT
        (6, False, ()),  # exactly at an epoch boundary
        (3, False, ("train.grad_accum_steps=2", "aux.itm_negatives=hard")),
    ],
)
def test_resume_after_interruption_matches_an_uninterrupted_run(
    make_cfg, tmp_path, stop_step, use_signal, extra
):
    full = train(make_cfg(f"train.output_dir={tmp_path / 'full'}", "train.epochs=3", *extra))
    cfg = make_cfg(f"train.output_dir={tmp_path / 'cut'}", "train.epochs=3", *extra)
    with pytest.raises(TrainingInterrupted) as stop:
        Trainer(cfg, callbacks=[StopAt(stop_step, use_signal)]).fit()
    assert stop.value.step == stop_step
    ckpt = find_checkpoint(cfg.train.output_dir / "checkpoint")
    assert ckpt is not None
    assert sorted(p.suffix for p in ckpt.iterdir()) == [
        ".json",
        ".json",
        ".safetensors",
        ".safetensors",
        ".safetensors",
    ]
    resumed = Trainer(cfg).fit(resume=True)
    assert resumed.metrics["test"] == full.metrics["test"]
    assert resumed.metrics["val"] == full.metrics["val"]
    assert resumed.global_step == full.global_step
    assert _same_weights(_weights(resumed.run_dir), _weights(full.run_dir))
    steps = (cfg.train.output_dir / "steps.jsonl").read_text()
    assert steps == (full.run_dir / "steps.jsonl").read_text()


def test_resume_refuses_a_changed_configuration(make_cfg, tmp_path):
    cfg = make_cfg("train.epochs=2")
    with pytest.raises(TrainingInterrupted):
        Trainer(cfg, callbacks=[StopAt(2)]).fit()
    changed = make_cfg("train.epochs=2", "train.lr=0.5")
    with pytest.raises(ValueError, match="another configuration"):
        Trainer(changed).fit(resume=True)


@pytest.mark.parametrize("family", ["late", "mmbt", "vilt", "lxmert"])
def test_dropout_is_active_in_every_training_epoch(make_cfg, family):
    # The authors' single-stream models switched dropout off after the first epoch.
    from tests.test_families import AUX, FAMILIES

    extra = (*FAMILIES[family], *AUX) if family != "late" else ()
    cfg = make_cfg("train.epochs=3", "model.dropout=0.3", *extra)
    seen: dict[int, list[bool]] = {}

    class Track(Callback):
        epoch = 0

        def on_epoch_end(self, trainer, record):
            Track.epoch = record["epoch"] + 1

    trainer = Trainer(cfg, callbacks=[Track()])
    original = nn.Dropout.forward

    def spy(self, x):
        if torch.is_grad_enabled():  # training steps, not validation
            seen.setdefault(Track.epoch, []).append(self.training)
        return original(self, x)

    nn.Dropout.forward = spy
    try:
        trainer.fit()
    finally:
        nn.Dropout.forward = original
    assert sorted(seen) == [0, 1, 2]
    for epoch, flags in seen.items():
        assert flags and all(flags), f"dropout off during epoch {epoch}"


def test_early_stopping_keeps_the_best_epoch(make_cfg):
    cfg = make_cfg("train.epochs=6", "train.patience=1", "train.lr=1e-12", "train.head_lr=1e-12")
    result = train(cfg)
    # Nothing can improve after epoch 1, so training stops after 1 + patience epochs.
    assert result.epochs_run == 2 and result.best_epoch == 1


def test_epoch_batches_are_a_pure_function_of_seed_and_epoch():
    a = epoch_batches(100, 16, seed=3, epoch=2)
    assert a == epoch_batches(100, 16, seed=3, epoch=2)
    assert a != epoch_batches(100, 16, seed=3, epoch=3)
    assert len(a) == 6 and all(len(b) == 16 for b in a)  # last partial batch dropped
    assert len({i for b in a for i in b}) == 96


def test_bad_data_stops_training_or_is_skipped_with_a_report(make_cfg, tmp_path, synth_root):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    first = json.loads((root / "manifest.jsonl").read_text().splitlines()[0])
    (root / first["image"]).write_bytes(b"garbage")
    with pytest.raises(ManifestError, match="image cannot be decoded"):
        train(make_cfg(root=root))
    result = train(make_cfg("data.on_error=skip", root=root))
    report = [json.loads(x) for x in (result.run_dir / "skipped.jsonl").read_text().splitlines()]
    assert [r["post_id"] for r in report] == [first["id"]]
    assert result.global_step == 2 * (95 // 16)


def test_image_feature_cache_is_reused_and_keyed_on_image_bytes(make_cfg, tmp_path, synth_root):
    import shutil

    from mmaux.assemble import assemble

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    cfg = make_cfg(root=root)
    first = assemble(cfg, torch.device("cpu"))
    again = assemble(cfg, torch.device("cpu"))
    assert first.features_from_cache is False and again.features_from_cache is True
    post = first.manifest.split("train")[0]
    other = first.manifest.split("train")[1]
    shutil.copy(root / other.image, root / post.image)  # same path, new content
    changed = assemble(cfg, torch.device("cpu"))
    assert changed.features_from_cache is False
    row = changed.datasets["train"][0]["image_pooled"]
    assert torch.equal(row, changed.datasets["train"][1]["image_pooled"])


def test_evaluate_command_reproduces_the_run_metrics(make_cfg):
    from mmaux.cli import main

    cfg = make_cfg()
    result = train(cfg)
    assert main(["evaluate", "--run", str(cfg.train.output_dir), "--split", "test"]) == 0
    again = json.loads((cfg.train.output_dir / "eval_test.json").read_text())
    assert again["macro_f1"] == pytest.approx(result.metrics["test"]["macro_f1"])
    assert again["confusion_matrix"] == result.metrics["test"]["confusion_matrix"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_training_on_gpu(make_cfg):
    cfg = make_cfg("train.device=cuda", "train.precision=auto", "train.epochs=1")
    result = train(cfg)
    assert result.metrics["precision"] == "bf16" and result.metrics["device"].startswith("cuda")
    assert 0.0 <= result.metrics["test"]["macro_f1"] <= 1.0


def test_trainable_image_encoder_reads_exact_cached_pixels(make_cfg, synth_root):
    from mmaux.assemble import assemble
    from mmaux.data.images import load_rgb

    cfg = make_cfg(
        "model.image.name=test_efficientnet",
        "model.image.pretrained=false",
        "model.image.freeze=false",
    )
    first = assemble(cfg, torch.device("cpu"), splits=("train",))
    again = assemble(cfg, torch.device("cpu"), splits=("train",))
    assert first.pixels_from_cache is False and again.pixels_from_cache is True
    assert first.features_from_cache is None  # a trainable encoder never uses frozen features
    ds = again.datasets["train"]
    post = ds.posts[3]
    direct = ds.transform(load_rgb(ds.root / post.image))
    assert torch.equal(ds[3]["pixel_values"], direct)  # uint8 caching is lossless
    result = train(cfg)
    assert result.global_step == 2 * (96 // 16)


def test_evaluate_run_rebuilds_a_frozen_random_encoder_as_trained(make_cfg):
    """Checkpoints hold trained weights only; frozen ones must be rebuilt identically."""
    from mmaux.evaluation import evaluate_run

    cfg = make_cfg("model.image.name=test_efficientnet", "model.image.pretrained=false")
    result = train(cfg)
    torch.manual_seed(12345)  # whatever the caller's RNG state, the rebuild must match
    metrics, _, _ = evaluate_run(cfg.train.output_dir, "test")
    assert metrics["confusion_matrix"] == result.metrics["test"]["confusion_matrix"]
    assert metrics["loss"] == pytest.approx(result.metrics["test"]["loss"], rel=1e-5)


def test_feature_cache_is_keyed_on_the_encoder_weights_not_its_name(make_cfg):
    from mmaux.assemble import assemble
    from mmaux.runtime import seed_everything

    extra = ("model.image.name=test_efficientnet", "model.image.pretrained=false")
    seed_everything(0)
    a = assemble(make_cfg(*extra), torch.device("cpu"), splits=("train",))
    seed_everything(1)  # same name and flags, other random weights: other features
    b = assemble(make_cfg(*extra), torch.device("cpu"), splits=("train",))
    assert a.features_from_cache is False and b.features_from_cache is False
    assert not torch.equal(
        a.datasets["train"][0]["image_pooled"], b.datasets["train"][0]["image_pooled"]
    )
    seed_everything(0)
    again = assemble(make_cfg(*extra), torch.device("cpu"), splits=("train",))
    assert again.features_from_cache is True


def test_length_grouped_batches_pad_less_and_cover_the_epoch():
    rng = torch.Generator().manual_seed(3)
    lengths = torch.randint(5, 129, (203,), generator=rng).tolist()
    plain = epoch_batches(203, 16, seed=1, epoch=0)
    grouped = epoch_batches(203, 16, seed=1, epoch=0, lengths=lengths, group=4)
    assert grouped == epoch_batches(203, 16, seed=1, epoch=0, lengths=lengths, group=4)
    assert grouped != epoch_batches(203, 16, seed=1, epoch=1, lengths=lengths, group=4)
    assert all(len(b) == 16 for b in grouped) and len(grouped) == len(plain) == 12
    flat = [i for b in grouped for i in b]
    assert len(set(flat)) == len(flat) == 192

    def padded(batches):
        return sum(max(lengths[i] for i in b) for b in batches) / len(batches)

    assert padded(grouped) < 0.75 * padded(plain)
    # within a group, batches are length-sorted, so no batch straddles the whole range
    spans = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in grouped]
    assert sum(spans) / len(spans) < 60


def test_persistent_loader_workers_give_the_same_run_as_the_main_process(make_cfg, tmp_path):
    inline = train(make_cfg(f"train.output_dir={tmp_path / 'w0'}"))
    workers = train(make_cfg("train.num_workers=2", f"train.output_dir={tmp_path / 'w2'}"))
    assert [h["train_loss"] for h in workers.history] == [h["train_loss"] for h in inline.history]
    assert workers.metrics["test"] == inline.metrics["test"]
