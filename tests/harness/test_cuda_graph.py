"""train.cuda_graph: where the step may be captured, and that the captured step computes the eager step.

CPU: the rules and the step function the graph records (its random draws made outside it) against the eager
Stepper, whose draws happen inside Transport.loss. GPU (skipped on CPU): graph replays against eager steps.
"""

from __future__ import annotations

import copy

import pytest
import torch

from harness.cuda_graph import StepGraph, compile_blocker, flatten_kwargs, graph_blocker
from harness.study import TrainConfig
from harness.training import Stepper
from zigma.backbones.dit import DiT
from zigma.backbones.zigma import ZigMa
from zigma.interpolants import LinearPath, Transport
from zigma.scans import Grid, LayerCycle, zigzag_paths

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _zigma(backend: str, *, drop_path: float = 0.0, classes: int | None = None) -> ZigMa:
    scans = LayerCycle(zigzag_paths, 2, name="zigzag-2").layer_scans(Grid(4, 4), 4)
    return ZigMa(width=32, depth=4, heads=2, head_dim=16, layer_scans=scans, input_shape=(1, 8, 8), patch_size=2,
                 num_classes=classes, context_dim=None, pos_embed="learned", temporal_pos_embed=False,
                 mixer_backend=backend, drop_path=drop_path, d_state=4)


def test_the_step_is_captured_only_where_it_can_be():
    net = _zigma("reference")
    assert graph_blocker("auto", CUDA, net, fp16=False) is None
    assert graph_blocker(True, CUDA, net, fp16=False) is None
    assert "false" in graph_blocker(False, CUDA, net, fp16=False)
    assert "CUDA device" in graph_blocker("auto", CPU, net, fp16=False)
    assert "fp16" in graph_blocker("auto", CUDA, net, fp16=True)
    assert "stochastic depth" in graph_blocker("auto", CUDA, _zigma("reference", drop_path=0.1), fp16=False)


def test_a_compiled_step_is_captured_only_in_modes_without_graphs_of_their_own_and_only_when_asked():
    net = _zigma("reference")
    for mode in (True, "default", "max-autotune-no-cudagraphs"):
        assert graph_blocker(True, CUDA, net, fp16=False, compile=mode) is None, mode
        assert "cuda_graph is auto" in graph_blocker("auto", CUDA, net, fp16=False, compile=mode)
    for mode in ("reduce-overhead", "max-autotune"):
        for setting in (True, "auto"):
            assert "Inductor's own CUDA graphs" in graph_blocker(setting, CUDA, net, fp16=False, compile=mode)
    assert compile_blocker(True, False) is None and compile_blocker("auto", False) is None
    with pytest.raises(ValueError, match="unknown compile setting 'fast'"):
        compile_blocker(True, "fast")


def test_cuda_graph_true_with_a_compile_mode_that_has_its_own_graphs_is_a_config_error():
    from pydantic import ValidationError
    for mode in ("reduce-overhead", "max-autotune"):
        with pytest.raises(ValidationError, match=f"train.cuda_graph true cannot capture train.compile '{mode}'"):
            TrainConfig(cuda_graph=True, compile=mode)
        assert TrainConfig(cuda_graph="auto", compile=mode).compile == mode
    assert TrainConfig(cuda_graph=True, compile="default").compile == "default"


def test_cuda_graph_true_where_it_cannot_be_is_an_error_naming_the_key_and_auto_falls_back():
    transport = Transport(LinearPath(), prediction="velocity")
    net = _zigma("reference")
    with pytest.raises(ValueError, match=r"train\.cuda_graph is true .* CUDA device"):
        Stepper(net, copy.deepcopy(net), transport, TrainConfig(cuda_graph=True), CPU)
    stepper = Stepper(net, copy.deepcopy(net), transport, TrainConfig(cuda_graph="auto"), CPU)
    assert stepper.graph is None and "CUDA device" in stepper.graph_blocker


def test_model_arguments_that_are_not_tensors_cannot_enter_a_graph():
    names, tensors = flatten_kwargs({"y": torch.ones(2), "context": None})
    assert names == ["y"] and torch.equal(tensors[0], torch.ones(2))
    with pytest.raises(ValueError, match="'captions' is a list"):
        flatten_kwargs({"captions": ["a red square"]})


def test_the_steppers_ema_warms_up_from_update_0_as_min_decay_1_plus_n_over_10_plus_n():
    """Oracle: the EMA of two steps written out: update n blends ema <- d_n ema + (1 - d_n) net with d_0 = 1/10 and
    d_1 = 2/11 (both under ema_decay 0.999), each after that step's parameter update."""
    transport = Transport(LinearPath(), prediction="velocity")
    torch.manual_seed(0)
    net = _zigma("reference")
    ema = copy.deepcopy(net).requires_grad_(False)
    want = [p.detach().clone() for p in ema.parameters()]
    stepper = Stepper(net, ema, transport, TrainConfig(lr=0.01, precision="fp32", ema_decay=0.999), CPU)
    g, data = torch.Generator().manual_seed(5), torch.Generator().manual_seed(7)
    for step, d in enumerate((1 / 10, 2 / 11)):
        stepper(torch.randn(4, 1, 8, 8, generator=data), {}, step, g)
        want = [d * w + (1 - d) * p.detach() for w, p in zip(want, net.parameters())]
    for w, e in zip(want, ema.parameters()):
        torch.testing.assert_close(e, w, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("classes", [None, 10])
def test_the_recorded_step_function_equals_the_eager_step_for_a_seed(classes):
    """Oracle: the eager Stepper, whose noise and times Transport.loss draws from the generator itself."""
    transport = Transport(LinearPath(), prediction="velocity")
    cfg = TrainConfig(lr=0.01, precision="fp32", grad_clip=0.5, warmup_steps=2)
    torch.manual_seed(0)
    net_a = _zigma("reference", classes=classes)
    net_b = copy.deepcopy(net_a)
    eager = Stepper(net_a, copy.deepcopy(net_a).requires_grad_(False), transport, cfg, CPU)
    graphed = Stepper(net_b, copy.deepcopy(net_b).requires_grad_(False), transport, cfg, CPU)
    ga, gb, data = (torch.Generator().manual_seed(s) for s in (5, 5, 7))
    for step in range(3):
        x1 = torch.randn(6, 1, 8, 8, generator=data)
        kwargs = {"y": torch.randint(0, 10, (6,), generator=data)} if classes else {}
        want = eager(x1, kwargs, step, ga)
        graphed._set_lr(0.01 * min(1.0, (step + 1) / 2))
        x0, t = graphed.draws(x1, gb)
        names, tensors = flatten_kwargs(kwargs)
        graphed._names = names
        got = graphed._step(x1, x0, t, *tensors)
        assert torch.equal(got, want), f"step {step}: {got} != {want}"
    for (name, pa), pb in zip(net_a.named_parameters(), net_b.parameters()):
        assert torch.equal(pa, pb), name
    assert ga.get_state().equal(gb.get_state()), "the draws consumed the generator differently"


# ---- GPU --------------------------------------------------------------------------------------------------------


def _dit(classes: int | None = None) -> DiT:
    return DiT(width=32, depth=3, heads=2, head_dim=16, input_shape=(1, 8, 8), patch_size=2, num_classes=classes,
               context_dim=None, pos_embed="sincos", temporal_pos_embed=False)


def _run(cuda_graph, steps, *, precision="fp32", classes=None, state=None, compile=False, backbone="zigma"):
    transport = Transport(LinearPath(), prediction="velocity")
    torch.manual_seed(0)
    net = (_zigma("fused", classes=classes) if backbone == "zigma" else _dit(classes)).to(CUDA)
    if state is not None:
        net.load_state_dict(state)
    ema = copy.deepcopy(net).requires_grad_(False)
    cfg = TrainConfig(lr=3e-3, precision=precision, cuda_graph=cuda_graph, warmup_steps=3, ema_decay=0.9,
                      compile=compile)
    stepper = Stepper(net, ema, transport, cfg, CUDA)
    g, data = torch.Generator(device=CUDA).manual_seed(3), torch.Generator(device=CUDA).manual_seed(4)
    losses = []
    for step in range(steps):
        x1 = torch.randn(16, 1, 8, 8, generator=data, device=CUDA)
        kwargs = {"y": torch.randint(0, 10, (16,), generator=data, device=CUDA)} if classes else {}
        losses.append(stepper(x1, kwargs, step, g).item())
    return stepper, losses, net, ema


@pytest.mark.gpu
@_CUDA
@pytest.mark.parametrize("backbone", ["zigma", "dit"])
@pytest.mark.parametrize("classes", [None, 10])
def test_graph_replays_give_the_eager_steps_losses_and_weights(classes, backbone):
    assert_graph_replays_the_eager_run(_run(True, 12, classes=classes, backbone=backbone),
                                       _run(False, 12, classes=classes, backbone=backbone))


def assert_graph_replays_the_eager_run(graphed_run, eager_run) -> None:
    """(stepper, losses, net, ema) of a graphed and of an eager run of the same seed: the graph was captured and
    gives the eager losses (fp32: rel 1e-4), weights and EMA weights (rtol 1e-3)."""
    graphed, lg, net_g, ema_g = graphed_run
    _, le, net_e, ema_e = eager_run
    assert graphed.graph is not None and graphed.graph.captured
    assert le[0] != le[-1], "nothing trained"
    assert lg == pytest.approx(le, rel=1e-4, abs=1e-6)
    for (name, a), b in zip(net_g.named_parameters(), net_e.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=name)
    for (name, a), b in zip(ema_g.named_parameters(), ema_e.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=f"EMA {name}")


def _video_run(cuda_graph, layout, steps=12):
    """A tiny video ZigMa (video-sst: 4 frames of 4x4 tokens; its temporal layers 16 segments of 4 frames, its
    spatial layers 4 of 16) on the fused kernels with Mamba-1 segments laid out `layout`, trained `steps` steps."""
    import functools

    from zigma.backbones import build_zigma
    from zigma.mixer import MambaMixer
    from zigma.scans import Factorized

    transport = Transport(LinearPath(), prediction="velocity")
    net = build_zigma(size="tiny", input_shape=(4, 1, 8, 8), patch_size=2, scan=Factorized("sst", name="video-sst"),
                      mixer=functools.partial(MambaMixer, segment_layout=layout), mixer_backend="fused", d_state=4,
                      device=CUDA, generator=torch.Generator(CUDA).manual_seed(0))
    ema = copy.deepcopy(net).requires_grad_(False)
    cfg = TrainConfig(lr=3e-3, precision="fp32", cuda_graph=cuda_graph, warmup_steps=3, ema_decay=0.9)
    stepper = Stepper(net, ema, transport, cfg, CUDA)
    g, data = torch.Generator(device=CUDA).manual_seed(3), torch.Generator(device=CUDA).manual_seed(4)
    losses = [stepper(torch.randn(8, 4, 1, 8, 8, generator=data, device=CUDA), {}, step, g).item()
              for step in range(steps)]
    return stepper, losses, net, ema


@pytest.mark.gpu
@_CUDA
def test_a_graphed_video_step_with_packed_segments_replays_the_eager_batch_folded_steps():
    """Oracle: the eager step with segments folded into the batch (the layout the CPU reference checks); the packed
    one, which segment_layout 'auto' now picks for short segments on the GPU, captured as a CUDA graph."""
    assert_graph_replays_the_eager_run(_video_run(True, "packed"), _video_run(False, "batch"))


@pytest.mark.gpu
@_CUDA
def test_graph_replays_in_bf16_track_the_eager_steps():
    _, lg, _, _ = _run("auto", 12, precision="bf16")
    _, le, _, _ = _run(False, 12, precision="bf16")
    assert lg == pytest.approx(le, rel=2e-2, abs=1e-3)


@pytest.mark.gpu
@_CUDA
def test_a_compiled_step_replayed_as_a_graph_gives_the_eager_steps_losses():
    """Oracle: the eager, uncompiled step. Inductor fuses and reorders fp32 arithmetic: a tolerance, not equality."""
    import torch._dynamo
    torch._dynamo.reset()
    graphed, lg, net_g, _ = _run(True, 12, classes=10, compile="default")
    _, le, net_e, _ = _run(False, 12, classes=10)
    assert graphed.graph is not None and graphed.graph.captured and graphed.model is not net_g, \
        "the compiled model was not the one captured"
    assert le[0] != le[-1], "nothing trained"
    assert lg == pytest.approx(le, rel=1e-3, abs=1e-5)
    for (name, a), b in zip(net_g.named_parameters(), net_e.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-4, msg=name)


@pytest.mark.gpu
@_CUDA
def test_a_captured_step_refuses_a_batch_of_another_shape():
    step = StepGraph(lambda x: (x * 2).sum(), warmup=1)
    x = torch.ones(4, device=CUDA)
    assert step(x).item() == 8 and step(x).item() == 8 and step(x + 1).item() == 16
    with pytest.raises(ValueError, match="same input shapes"):
        step(torch.ones(3, device=CUDA))


# ---- sampling (eval.cuda_graph) ---------------------------------------------------------------------------------


def _class_cond(device):
    from harness.model import Conditioning
    data = type("D", (), {"info": type("I", (), {"num_classes": 10})()})()
    return Conditioning("class", 0.1, data, device)


def test_eval_cuda_graph_true_where_sampling_cannot_be_captured_is_an_error_naming_the_key():
    from harness.sampling import ModelGraphs
    with pytest.raises(ValueError, match=r"eval\.cuda_graph is true .* CUDA device"):
        ModelGraphs(True, CPU)
    assert "CUDA device" in ModelGraphs("auto", CPU).blocker


@pytest.mark.gpu
@_CUDA
@pytest.mark.parametrize("sampler_name", ["euler", "dopri5"])
def test_graphed_sampling_draws_the_eager_samples(sampler_name):
    """Oracle: the same passes with the model called eagerly (eval.cuda_graph false)."""
    from harness.model import Net
    from harness.sampling import ModelGraphs, sample_images
    from zigma.interpolants.samplers import Dopri5, Euler
    torch.manual_seed(0)
    net = Net(_zigma("fused", classes=10)).to(CUDA).eval()
    transport = Transport(LinearPath(), prediction="velocity")
    sampler = Euler(steps=8) if sampler_name == "euler" else Dopri5(atol=1e-3, rtol=1e-3)
    out = {}
    for setting in (False, True):
        graphs = ModelGraphs(setting, CUDA)
        out[setting] = sample_images(net, transport, sampler, _class_cond(CUDA), n=20, batch_size=8, shape=(1, 8, 8),
                                     seed=3, cfg_scale=2.0, device=CUDA, amp=None, graphs=graphs)
        if setting:
            assert len(graphs._graphs) == 2 and all(g.captured for g in graphs._graphs.values()), \
                "one graph per batch shape (8 and the ragged 4)"
    diff = (out[True].fake.int() - out[False].fake.int()).abs()
    assert diff.max() <= 1, f"uint8 samples differ by up to {diff.max()}"
    assert out[True].nfe == out[False].nfe


@pytest.mark.parametrize("saved_lr", [0.01, torch.tensor(0.01)])
def test_after_a_checkpoint_load_the_captured_step_reads_a_device_lr_that_later_steps_fill_in_place(saved_lr):
    """A checkpoint restores param_groups' lr as a float (eager run) or a CPU tensor (graphed run, map_location
    cpu); a graph captured on either would keep the value it was captured with. Here the device is the CPU, so a
    graph is stood in for by an object that has not captured yet."""
    transport = Transport(LinearPath(), prediction="velocity")
    net = _zigma("reference")
    stepper = Stepper(net, copy.deepcopy(net), transport, TrainConfig(cuda_graph=False), CPU)
    state = stepper.opt.state_dict()
    state["param_groups"][0]["lr"] = saved_lr
    stepper.opt.load_state_dict(state)
    stepper.graph = type("NotCaptured", (), {"captured": False})()
    stepper._set_lr(0.5)
    lr = stepper.opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.item() == 0.5 and lr is not saved_lr
    stepper._set_lr(0.25)
    assert stepper.opt.param_groups[0]["lr"] is lr and lr.item() == 0.25, "filled in place, the same tensor"
    stepper.graph = type("Captured", (), {"captured": True})()
    stepper.opt.param_groups[0]["lr"] = 0.1
    with pytest.raises(RuntimeError, match="replaced"):
        stepper._set_lr(0.3)


@pytest.mark.gpu
@_CUDA
def test_a_graphed_run_resumed_from_its_checkpoint_follows_the_uninterrupted_one_through_the_lr_warmup():
    """8 graphed steps in one go vs 4 + (save, load into a new stepper) + 4, the learning rate still warming up:
    a graph captured with a restored float or CPU-tensor lr would keep that value and the curves would part."""
    import io
    transport = Transport(LinearPath(), prediction="velocity")
    cfg = TrainConfig(lr=3e-3, precision="fp32", cuda_graph=True, warmup_steps=20, ema_decay=0.9)

    def batches():
        data = torch.Generator(device=CUDA).manual_seed(4)
        return [torch.randn(16, 1, 8, 8, generator=data, device=CUDA) for _ in range(8)]

    torch.manual_seed(0)
    net = _zigma("fused").to(CUDA)
    start = copy.deepcopy(net.state_dict())
    whole = Stepper(net, copy.deepcopy(net).requires_grad_(False), transport, cfg, CUDA)
    g = torch.Generator(device=CUDA).manual_seed(3)
    want = [whole(x, {}, s, g).item() for s, x in enumerate(batches())]

    net = _zigma("fused").to(CUDA)
    net.load_state_dict(start)
    first = Stepper(net, copy.deepcopy(net).requires_grad_(False), transport, cfg, CUDA)
    g = torch.Generator(device=CUDA).manual_seed(3)
    xs = batches()
    got = [first(x, {}, s, g).item() for s, x in enumerate(xs[:4])]
    buf = io.BytesIO()
    torch.save({"net": net.state_dict(), "opt": first.opt.state_dict(), "gen": g.get_state()}, buf)
    buf.seek(0)
    saved = torch.load(buf, map_location="cpu", weights_only=True)
    net2 = _zigma("fused").to(CUDA)
    net2.load_state_dict(saved["net"])
    second = Stepper(net2, copy.deepcopy(net2).requires_grad_(False), transport, cfg, CUDA)
    second.opt.load_state_dict(saved["opt"])
    g2 = torch.Generator(device=CUDA)
    g2.set_state(saved["gen"])
    got += [second(x, {}, 4 + s, g2).item() for s, x in enumerate(xs[4:])]
    assert second.graph is not None and second.graph.captured
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


class _FailingGraph:
    """Stands in for a StepGraph whose capture fails (on a CPU, where no graph can be recorded)."""

    captured = False

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *inputs):
        from harness.cuda_graph import CaptureFailed
        raise CaptureFailed("RuntimeError: operation not permitted when stream is capturing")


def test_a_failed_capture_under_auto_runs_that_step_eagerly_with_the_same_draws_and_true_names_the_key():
    """Oracle: an eager Stepper on the same seed; the failed capture recorded only, so the step runs once, eagerly."""
    transport = Transport(LinearPath(), prediction="velocity")
    cfg = TrainConfig(lr=0.01, precision="fp32", cuda_graph="auto")
    torch.manual_seed(0)
    net_a = _zigma("reference")
    net_b = copy.deepcopy(net_a)
    eager = Stepper(net_a, copy.deepcopy(net_a).requires_grad_(False), transport, cfg, CPU)
    failing = Stepper(net_b, copy.deepcopy(net_b).requires_grad_(False), transport, cfg, CPU)
    for stepper in (eager, failing):     # a graphed stepper's optimizer reads its lr from a tensor
        stepper.opt.param_groups[0]["lr"] = torch.tensor(0.01)
    failing.graph = _FailingGraph()
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    x1 = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(failing(x1, {}, 0, gb), eager(x1, {}, 0, ga))
    assert failing.graph is None and "capture failed" in failing.graph_blocker
    for (name, pa), pb in zip(net_a.named_parameters(), net_b.parameters()):
        assert torch.equal(pa, pb), name
    strict = Stepper(copy.deepcopy(net_a), copy.deepcopy(net_a), transport, cfg, CPU)
    strict.graph, strict.cfg = _FailingGraph(), cfg.model_copy(update={"cuda_graph": True})
    with pytest.raises(ValueError, match=r"train\.cuda_graph is true but the step could not be captured"):
        strict(x1, {}, 0, torch.Generator().manual_seed(5))


def test_a_failed_sampling_capture_under_auto_calls_the_model_eagerly_from_then_on(monkeypatch):
    import harness.cuda_graph
    from harness.sampling import ModelGraphs
    monkeypatch.setattr(harness.cuda_graph, "StepGraph", _FailingGraph)
    calls = []

    def call(x, t):
        calls.append(1)
        return x * t

    graphs = ModelGraphs("auto", CPU)
    graphs.blocker = None                                  # as on a CUDA device
    fn = graphs.wrap(call, [])
    x, t = torch.ones(2, 3), torch.full((2, 1), 0.5)
    assert torch.equal(fn(x, t), x * t) and "capture failed" in graphs.blocker
    assert torch.equal(fn(x, t), x * t) and len(calls) == 2
    strict = ModelGraphs("auto", CPU)
    strict.blocker, strict.setting = None, True
    with pytest.raises(ValueError, match=r"eval\.cuda_graph is true but the model call could not be captured"):
        strict.wrap(call, [])(x, t)


@pytest.mark.gpu
@_CUDA
def test_graphed_trials_one_after_another_in_one_process_start_from_the_same_memory():
    """The allocator's own counters are the oracle. Graphs warm up and are captured on one side stream per process, so
    trials after the first leave nothing more allocated (a new stream per warm-up left a cuBLAS workspace each, about
    0.24 GB a trial on an H200), and release_cuda_memory brings the process back to where it started."""
    import gc

    from harness.cuda_graph import release_cuda_memory

    def trial() -> int:
        net = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 256)).cuda()
        opt = torch.optim.AdamW(net.parameters(), lr=torch.tensor(1e-3, device="cuda"), capturable=True)

        def step(x):
            loss = net(x).square().mean()
            loss.backward()
            opt.step()
            return loss.detach()

        graph = StepGraph(step, lambda: opt.zero_grad(set_to_none=True))
        torch.cuda.reset_peak_memory_stats()
        for _ in range(6):
            graph(torch.randn(512, 256, device="cuda"))
        assert graph.captured
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()

    release_cuda_memory()
    base = torch.cuda.memory_allocated()
    held, peaks = [], []
    for _ in range(3):                       # without clearing the workspaces: nothing grows after the first trial
        peaks.append(trial())
        gc.collect()
        torch.cuda.empty_cache()
        held.append(torch.cuda.memory_allocated())
    assert held[0] == held[1] == held[2] and peaks[1] == peaks[2]
    release_cuda_memory()
    assert torch.cuda.memory_allocated() == base
    assert trial() == peaks[0]               # after a release a trial starts exactly as the first one did
