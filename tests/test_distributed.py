"""Data-parallel training: torchrun with 2 CPU processes (gloo) against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mmaux.config import Config, dump_config
from mmaux.distributed import DistInfo, shard
from mmaux.training import train
from tests.pipeline_fixtures import REPO, save_tiny_bert, shrunk_config

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch built without distributed support"
)


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory) -> Path:
    """The tiny random BERT without dropout, so both runs compute the same function."""
    return save_tiny_bert(
        tmp_path_factory.mktemp("bert-nodrop"),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def _torchrun(cfg: Config, *overrides: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """Run ``mmaux train`` under torchrun on ``cfg`` (written next to its output dir)."""
    params = Path(cfg.train.output_dir).parent / "params.yaml"
    params.write_text(yaml.safe_dump(dump_config(cfg), sort_keys=False))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "mmaux",
        "train",
        "--params",
        str(params),
        *[a for o in overrides for a in ("--set", o)],
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_shard_splits_a_global_batch_in_rank_order():
    batch = list(range(10, 18))
    parts = [shard(batch, DistInfo(rank=r, world_size=4)) for r in range(4)]
    assert parts == [[10, 11], [12, 13], [14, 15], [16, 17]]
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        shard(list(range(6)), DistInfo(rank=0, world_size=4))


@pytest.mark.parametrize(
    ("family", "extra"),
    [
        ("late", ()),
        # early fusion, with SimCSE's negatives gathered over the global batch too
        ("mmbt", ("aux.simcse_weight=0.1",)),
    ],
)
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(
    tmp_path, synth_root, no_dropout_bert, family, extra
):
    cfg = shrunk_config(
        tmp_path,
        synth_root,
        no_dropout_bert,
        f"model.family={family}",
        "model.dropout=0",
        "aux.itc_weight=0.2",  # ITC over the gathered global batch
        "aux.itm_weight=0",
        *extra,
        "train.batch_size=16",
        "train.epochs=2",
        f"train.output_dir={tmp_path / 'single'}",
    )
    single = train(cfg)
    _torchrun(cfg, f"train.output_dir={tmp_path / 'ddp'}")

    ddp_metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp_metrics["world_size"] == 2
    assert ddp_metrics["global_step"] == single.global_step == 2 * (96 // 16)
    a = load_file(tmp_path / "single" / "model.safetensors")
    b = load_file(tmp_path / "ddp" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=2e-4, rtol=1e-3, msg=k)
    steps_1 = [
        json.loads(x) for x in (tmp_path / "single" / "steps.jsonl").read_text().splitlines()
    ]
    steps_2 = [json.loads(x) for x in (tmp_path / "ddp" / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps_2] == [s["step"] for s in steps_1]  # rank 0 logs alone
    for s1, s2 in zip(steps_1, steps_2, strict=True):  # logged: the global-batch losses
        for key in ("loss", "ce", "itc", *(["simcse"] if extra else [])):
            assert s2[key] == pytest.approx(s1[key], rel=1e-3, abs=1e-4), (s1["step"], key)
    assert ddp_metrics["val"]["macro_f1"] == pytest.approx(
        single.metrics["val"]["macro_f1"], abs=1e-6
    )


def test_ddp_with_itm_and_accumulation_writes_once_from_rank_0(
    tmp_path, synth_root, no_dropout_bert
):
    cfg = shrunk_config(
        tmp_path,
        synth_root,
        no_dropout_bert,
        "aux.itc_weight=0.1",
        "aux.itm_weight=0.1",
        "aux.itm_negatives=hard",
        "train.batch_size=8",
        "train.grad_accum_steps=2",
        "train.epochs=1",
        "train.log_every_steps=1",
        f"train.output_dir={tmp_path / 'ddp'}",
    )
    _torchrun(cfg)
    run = tmp_path / "ddp"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == (96 // 8) // 2  # optimizer steps after accumulation
    lines = (run / "steps.jsonl").read_text().splitlines()
    assert len(lines) == metrics["global_step"]  # no second writer
    assert all("itm" in json.loads(x) and "itc" in json.loads(x) for x in lines)
    assert not (run / "checkpoint").exists()
    assert {"test", "val"} <= metrics.keys()


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the torchrun worker with RANK=rank under ``parent`` (Linux /proc)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


def test_a_signal_to_one_rank_stops_every_rank_at_a_log_point_and_resumes(
    tmp_path, synth_root, no_dropout_bert
):
    import signal
    import time

    cfg = shrunk_config(
        tmp_path,
        synth_root,
        no_dropout_bert,
        "aux.itm_weight=0",
        "train.batch_size=8",  # 12 steps per epoch
        "train.epochs=4",
        "train.log_every_steps=4",
        f"train.output_dir={tmp_path / 'ddp'}",
    )
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(dump_config(cfg), sort_keys=False))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "mmaux", "train", "--params", str(params)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    steps = tmp_path / "ddp" / "steps.jsonl"
    deadline = time.monotonic() + 300
    while not (steps.is_file() and steps.read_text()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    rank1 = _rank_pid(proc.pid, 1)
    assert rank1 is not None
    os.kill(rank1, signal.SIGTERM)  # one rank only: the ranks agree at the next log point
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    state = json.loads((tmp_path / "ddp" / "checkpoint" / "state.json").read_text())
    assert state["global_step"] % 4 == 0 and state["global_step"] < 48, state["global_step"]
    assert b"interrupted at step" in err
    resumed = subprocess.run([*cmd, "--resume"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["global_step"] == 48 and metrics["world_size"] == 2
