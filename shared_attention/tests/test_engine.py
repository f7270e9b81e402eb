"""In-process engine behaviour: accumulation, EMA, early stop, best tracking, schedules, errors, logs."""

import csv
import json
import math

import pytest
import torch

from shared_attention.engine import (
    LRSchedule,
    ModelEMA,
    ScheduleConfig,
    TrainConfig,
    fit,
    load_config,
    load_weights,
)
from shared_attention.engine import trainer as trainer_module
from shared_attention.engine.checkpoint import STATE_FILE, list_checkpoints, load_trainer_state
from shared_attention.serving import InputError, Predictor
from shared_attention.toy import PointerPredictor, PointerTask, ToyConfig

FAST = ["train.progress=false", "train.tensorboard=false", "model.dim=16", "model.depth=1", "data.n_train=128",
        "data.n_val=32"]


def _cfg(tmp_path, *extra):
    return load_config(ToyConfig, None, [f"train.run_dir={tmp_path}", *FAST, *extra])


def test_accumulation_matches_large_batch(tmp_path):
    # SGD: Adam's per-element normalisation would amplify float rounding of near-zero gradients
    common = ("train.max_steps=4", "train.eval_every=0", "train.optim.name=sgd", "train.optim.lr=0.5")
    a = _cfg(tmp_path / "a", "train.batch_size=16", *common)
    b = _cfg(tmp_path / "b", "train.batch_size=8", "train.grad_accum_steps=2", *common)
    c = _cfg(tmp_path / "c", "train.batch_size=8", *common)  # same steps, half the data: must differ
    ra, rb, rc = (fit(PointerTask(x), x.train, x) for x in (a, b, c))
    sa, sb, sc = ra.model.state_dict(), rb.model.state_dict(), rc.model.state_dict()
    assert any((sa[k] - sc[k]).abs().max() > 1e-3 for k in sa)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=2e-5, rtol=1e-4)


def test_run_folder_contents_logs_and_best_tracking(tmp_path):
    cfg = _cfg(tmp_path, "train.max_steps=12", "train.batch_size=16", "train.eval_every=4",
               "train.checkpoint_every=4", "train.keep_checkpoints=0", "train.log_every=2", "train.tensorboard=true")
    res = fit(PointerTask(cfg), cfg.train, cfg)
    for name in ("config.yaml", "metadata.json", "model.safetensors", "metrics.csv"):
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "tb").iterdir())
    assert load_config(ToyConfig, tmp_path / "config.yaml") == cfg
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["task"] == "toy-pointer" and meta["result"]["step"] == 12 and "torch" in meta["versions"]
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    val_acc = {int(r["step"]): float(r["value"]) for r in rows if r["split"] == "val" and r["metric"] == "accuracy"}
    assert sorted(val_acc) == [4, 8, 12]
    assert sorted({int(r["step"]) for r in rows if r["split"] == "train"}) == [2, 4, 6, 8, 10, 12]
    best_step = max(val_acc, key=lambda s: (val_acc[s], -s))
    assert res.best_step == best_step and math.isclose(res.best_value, val_acc[best_step])
    served = load_weights(tmp_path / "model.safetensors")
    at_best = load_weights(tmp_path / "checkpoints" / f"step_{best_step:08d}" / "model.safetensors")
    assert all(torch.equal(served[k], at_best[k]) for k in served)


def test_early_stop_when_metric_stalls(tmp_path):
    cfg = _cfg(tmp_path, "train.max_steps=50", "train.batch_size=16", "train.eval_every=2",
               "train.early_stop_patience=2", "train.optim.lr=0.0", "train.monitor=loss")
    res = fit(PointerTask(cfg), cfg.train, cfg)
    assert res.step == 6  # evals at 2 (best), 4 and 6 (no improvement with lr=0) -> stop
    assert list_checkpoints(tmp_path)[-1].name == "step_00000006"


def test_non_finite_loss_is_reported_with_step(tmp_path):
    cfg = _cfg(tmp_path, "train.max_steps=5", "train.batch_size=16")

    class Broken(PointerTask):
        def training_step(self, model, batch):
            out = dict(super().training_step(model, batch))
            out["loss"] = out["loss"] * float("nan")
            return out

    with pytest.raises(FloatingPointError, match="step 1"):
        fit(Broken(cfg), cfg.train, cfg)


def test_ema_serves_averaged_weights(tmp_path):
    cfg = _cfg(tmp_path, "train.max_steps=6", "train.batch_size=16", "train.ema_decay=0.5", "train.monitor=null",
               "train.eval_every=0")
    res = fit(PointerTask(cfg), cfg.train, cfg)
    served = load_weights(tmp_path / "model.safetensors")
    raw = res.model.state_dict()
    assert any(not torch.equal(served[k], raw[k]) for k in raw)
    m = torch.nn.Linear(2, 2)
    ema = ModelEMA(m, 0.9)
    start = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)
    torch.testing.assert_close(ema.shadow["weight"], 0.9 * start + 0.1 * (start + 1.0))
    with ema.applied(m):
        torch.testing.assert_close(m.weight, ema.shadow["weight"])
    torch.testing.assert_close(m.weight, start + 1.0)


def test_schedules():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cos = LRSchedule(opt, ScheduleConfig(name="cosine", warmup_steps=10), total_steps=110)
    assert cos.factor(0) == pytest.approx(0.1) and cos.factor(9) == pytest.approx(1.0)
    assert cos.factor(60) == pytest.approx(0.5) and cos.factor(110) == pytest.approx(0.0, abs=1e-12)
    ms = LRSchedule(opt, ScheduleConfig(name="multistep", milestones=(5, 8), gamma=0.5), 10)
    assert [ms.factor(s) for s in (4, 5, 8)] == [1.0, 0.5, 0.25]
    poly = LRSchedule(opt, ScheduleConfig(name="poly", power=0.9), 100)
    assert poly.factor(50) == pytest.approx(0.5**0.9)
    assert poly.apply(50) == pytest.approx(0.5**0.9) and opt.param_groups[0]["lr"] == pytest.approx(0.5**0.9)
    pl = LRSchedule(opt, ScheduleConfig(name="plateau", patience=2, gamma=0.5), 100)
    cuts = [pl.observe(v, "min") for v in (1.0, 0.9, 0.95, 0.96, 0.97, 0.98)]
    assert cuts == [False, False, False, True, False, True] and pl.factor(0) == 0.25
    state = pl.state_dict()
    pl2 = LRSchedule(opt, ScheduleConfig(name="plateau"), 100)
    pl2.load_state_dict(state)
    assert pl2.factor(3) == 0.25


def test_config_validation_errors():
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="milestones"):
        ScheduleConfig(milestones=(5, 3))


def test_monitor_must_exist(tmp_path):
    cfg = _cfg(tmp_path, "train.max_steps=2", "train.batch_size=16", "train.monitor=psnr", "train.eval_every=2")
    with pytest.raises(KeyError, match="psnr"):
        fit(PointerTask(cfg), cfg.train, cfg)


def test_predictor_protocol_and_input_errors(tmp_path):
    cfg = _cfg(tmp_path, "train.max_steps=3", "train.batch_size=16")
    fit(PointerTask(cfg), cfg.train, cfg)
    pred = PointerPredictor.load(tmp_path)
    assert isinstance(pred, Predictor)
    L = cfg.data.seq_len
    seq = [2] + [i % cfg.data.vocab for i in range(L - 1)]
    out = pred({"sequences": [seq, seq]})
    assert len(out["values"]) == 2 and all(0 <= v < cfg.data.vocab for v in out["values"])
    info = pred.info()
    assert len(info["weights_sha256"]) == 64 and info["io"]["inputs"][0]["name"] == "sequences"
    with pytest.raises(InputError, match=r"sequences\[1\].*values must lie"):
        pred.preprocess({"sequences": [seq, [0] + [99] * (L - 1)]})
    with pytest.raises(InputError, match="sequences"):
        pred.preprocess({"seq": []})
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        (tmp_path / "model.safetensors").unlink()
        PointerPredictor.load(tmp_path)


def test_bf16_autocast_trains_on_cpu(tmp_path):
    cfg = _cfg(tmp_path, "train.max_steps=3", "train.batch_size=16", "train.amp=bf16", "train.eval_every=3")
    res = fit(PointerTask(cfg), cfg.train, cfg)
    assert res.step == 3 and math.isfinite(res.last_metrics["loss"])
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        bad = _cfg(tmp_path / "x", "train.max_steps=1", "train.amp=fp16", "train.device=cpu")
        fit(PointerTask(bad), bad.train, bad)


@pytest.mark.parametrize("full_precision", [False, True])
def test_full_precision_eval_leaves_the_training_autocast(tmp_path, full_precision):
    """A task with ``full_precision_eval`` validates in float32 under train.amp=bf16; others under autocast."""
    seen: list[torch.dtype] = []

    class Task(PointerTask):
        full_precision_eval = full_precision

        def validation_step(self, model, batch):
            seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
            return super().validation_step(model, batch)

    cfg = _cfg(tmp_path, "train.max_steps=2", "train.batch_size=16", "train.amp=bf16", "train.eval_every=2")
    fit(Task(cfg), cfg.train, cfg)
    assert seen and set(seen) == {torch.float32 if full_precision else torch.bfloat16}


class _FakeClock:
    """Stands in for the trainer's clock: time moves only when a test advances it, never with machine load."""

    def __init__(self) -> None:
        self.now = 1000.0  # any origin: the trainer only uses differences

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_clock(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(trainer_module, "_clock", clock)
    return clock


class _TimedPointerTask(PointerTask):
    """Every training micro-step costs exactly ``seconds_per_step`` on the fake clock."""

    def __init__(self, cfg, clock: _FakeClock, seconds_per_step: float) -> None:
        super().__init__(cfg)
        self.clock, self.seconds_per_step = clock, seconds_per_step

    def training_step(self, model, batch):
        self.clock.now += self.seconds_per_step
        return super().training_step(model, batch)


def test_time_budget_stops_with_eval_and_checkpoint(tmp_path, fake_clock):
    # a 0.06 s budget at 0.025 s per step: steps 1 and 2 fit in it, step 3 (0.075 s) spends it
    cfg = _cfg(tmp_path, "train.max_steps=100000", "train.batch_size=16", "train.max_minutes=0.001",
               "train.eval_every=0")
    res = fit(_TimedPointerTask(cfg, fake_clock, 0.025), cfg.train, cfg)
    assert res.step == 3
    assert res.seconds == pytest.approx(0.075)
    assert "accuracy" in res.last_metrics  # evaluated at the stop
    assert list_checkpoints(tmp_path)[-1].name == f"step_{res.step:08d}"


def test_schedule_by_time_follows_the_clock_and_is_checkpointed():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = ScheduleConfig(name="cosine", warmup_steps=2, by_time=True, min_lr_ratio=0.1)
    with pytest.raises(ValueError, match="max_minutes"):
        LRSchedule(opt, cfg, 100)
    sch = LRSchedule(opt, cfg, total_steps=100, budget_s=60.0)
    assert sch.factor(0) == pytest.approx(0.5)  # warm-up stays in steps
    sch.elapsed_s = 30.0  # half the budget: half-way down the cosine, whatever the step
    assert sch.factor(5) == pytest.approx(sch.factor(90)) == pytest.approx(0.1 + 0.9 * 0.5)
    sch.elapsed_s = 90.0  # past the budget: the floor
    assert sch.factor(50) == pytest.approx(0.1)
    sch.elapsed_s = 15.0
    again = LRSchedule(opt, cfg, total_steps=100, budget_s=60.0)
    again.load_state_dict(sch.state_dict())
    assert again.elapsed_s == 15.0 and again.factor(50) == pytest.approx(sch.factor(50))


def test_time_schedule_run_anneals_within_its_budget(tmp_path, fake_clock):
    # a 15 s budget (0.25 min) at 0.4 s per step on the fake clock: the outcome cannot depend on machine load
    dt, budget = 0.4, 15.0
    cfg = _cfg(tmp_path, "train.max_steps=100000", "train.batch_size=16", "train.max_minutes=0.25",
               "train.eval_every=0", "train.log_every=1", "train.schedule.name=cosine",
               "train.schedule.by_time=true", "train.schedule.min_lr_ratio=0.0")
    res = fit(_TimedPointerTask(cfg, fake_clock, dt), cfg.train, cfg)
    # it stops at the first step that spends the budget (38 * 0.4 s > 15 s), far before max_steps
    assert res.step == 38 and res.seconds == pytest.approx(38 * dt)
    with open(tmp_path / "metrics.csv") as fh:
        lrs = [float(r["value"]) for r in csv.DictReader(fh) if r["metric"] == "lr"]
    base = cfg.train.optim.lr
    assert len(lrs) == res.step
    # the rate of step k follows the time spent when it is taken (k * dt), not the step count out of max_steps
    expected = [base * 0.5 * (1 + math.cos(math.pi * min(k * dt / budget, 1.0))) for k in range(1, res.step + 1)]
    assert lrs == pytest.approx(expected, rel=1e-5, abs=1e-12)
    assert lrs[0] > 0.99 * base and lrs[-1] < 1e-6 * base  # started at the base rate, ended at the floor
    assert all(b < a for a, b in zip(lrs, lrs[1:]))  # strictly annealing
    # the spent time is checkpointed, so a resumed run continues the curve
    state = load_trainer_state(list_checkpoints(tmp_path)[-1] / STATE_FILE)
    assert state["schedule"]["elapsed_s"] == pytest.approx(38 * dt)


def test_compile_trains_the_same_and_keeps_eager_state_dicts(tmp_path):
    """train.compile runs the training steps through torch.compile; weights, checkpoints and the served model keep
    the eager module's keys, and the result equals an eager run's within float tolerance."""
    seen: list[str] = []

    class Task(PointerTask):
        def training_step(self, model, batch):
            seen.append(type(model).__name__)
            return super().training_step(model, batch)

    # SGD: Adam's per-element normalisation would amplify the float rounding differences of fused kernels
    common = ("train.max_steps=3", "train.batch_size=16", "train.eval_every=3", "train.checkpoint_every=3",
              "train.optim.name=sgd", "train.optim.lr=0.5")
    eager = _cfg(tmp_path / "eager", *common)
    comp = _cfg(tmp_path / "compiled", *common, "train.compile=true")
    assert comp.train.compile and not eager.train.compile
    r_eager = fit(Task(eager), eager.train, eager)
    assert seen and set(seen) == {"PointerTransformer"}
    seen.clear()
    r_comp = fit(Task(comp), comp.train, comp)
    assert seen and set(seen) == {"OptimizedModule"}
    served = load_weights(tmp_path / "compiled" / "model.safetensors")
    assert not any("_orig_mod" in k for k in served)
    assert served.keys() == load_weights(tmp_path / "eager" / "model.safetensors").keys()
    sa, sb = r_eager.model.state_dict(), r_comp.model.state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=1e-5, rtol=1e-4)


def test_evaluation_start_hook_runs_before_each_evaluation_in_eval_mode(tmp_path):
    """``on_evaluation_start`` sees the eval-mode model before every validation; what it stores in a buffer is
    in the weights the evaluation selects (served and checkpointed)."""
    events: list[tuple[str, int, bool]] = []

    class Task(PointerTask):
        def build_model(self):
            model = super().build_model()
            model.register_buffer("fitted", torch.zeros(()))
            return model

        def on_evaluation_start(self, model):
            model.fitted.add_(1.0)  # counts the evaluations seen by these weights
            events.append(("start", int(model.fitted), model.training))

        def validation_step(self, model, batch):
            if not events or events[-1][0] != "val":
                events.append(("val", int(model.fitted), model.training))
            return super().validation_step(model, batch)

    cfg = _cfg(tmp_path, "train.max_steps=6", "train.batch_size=16", "train.eval_every=2",
               "train.checkpoint_every=2")
    res = fit(Task(cfg), cfg.train, cfg)
    assert events == [("start", 1, False), ("val", 1, False), ("start", 2, False), ("val", 2, False),
                      ("start", 3, False), ("val", 3, False)]
    served = load_weights(tmp_path / "model.safetensors")
    assert int(served["fitted"]) == res.best_step // 2  # the buffer as it was at the selected evaluation


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_build_optimizer_fuses_adam_on_the_cpu_with_the_same_update(name: str) -> None:
    """Plain CPU parameters get PyTorch's fused Adam / AdamW (one kernel for all tensors); its steps match the
    per-tensor loop's, weight-decay groups included."""
    from shared_attention.engine.trainer import OptimConfig, build_optimizer

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.LayerNorm(7), torch.nn.Linear(7, 3))
    b = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.LayerNorm(7), torch.nn.Linear(7, 3))
    b.load_state_dict(a.state_dict())
    start = a[0].weight.detach().clone()
    cfg = OptimConfig(name=name, lr=1e-2, weight_decay=0.1)  # type: ignore[arg-type]
    fused = build_optimizer(a, cfg)
    assert all(g["fused"] for g in fused.param_groups)
    loop = build_optimizer(b, cfg)
    for g in loop.param_groups:
        g["fused"] = None  # the per-tensor implementation
    x = torch.randn(8, 5)
    for _ in range(3):
        for model, opt in ((a, fused), (b, loop)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert (a[0].weight - start).abs().max() > 1e-3  # the steps moved the weights
