"""Backbones: SpectralEarth's parameter names and shapes, the tiny reference, the fast adapter."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from trainkit import reference_adapter  # noqa: E402

from spectralearth_build.train.models import (  # noqa: E402
    CheckpointError,
    ModelError,
    SpecResNet50,
    SpectralAdapter,
    SpecViT,
    adapter_positions,
    build_backbone,
    list_backbones,
    load_pretrained,
)
from spectralearth_build.train.models.adapter import banded_index, banded_weight  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REF = Path("/work/shared/reference/spectralearth")
KEYS = REF / "checkpoint_keys.json"
TINY = REF / "spec_vit_tiny_reference.pt"
needs_ref = pytest.mark.skipif(not KEYS.exists(), reason="SpectralEarth reference files absent")


def shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@needs_ref
@pytest.mark.parametrize(
    ("name", "ref_key", "kw"),
    [
        ("spec_vit_small", "spec_vit_small", {"num_classes": 1000}),
        ("spec_vit_b", "spec_vit_base", {"num_classes": 1000}),
        ("spec_rn50", "spec_resnet50", {}),
    ],
)
def test_keys_and_shapes_match_spectralearth(name, ref_key, kw):
    expected = json.loads(KEYS.read_text())["models"][ref_key]
    assert shapes(build_backbone(name, **kw)) == expected
    # the default headless encoder has exactly the encoder keys
    encoder = {
        k: v for k, v in expected.items() if not k.startswith(("vit_core.head.", "resnet.fc."))
    }
    assert shapes(build_backbone(name)) == encoder


@needs_ref
def test_tiny_reference_loads_strictly_and_reproduces_outputs():
    ref = torch.load(TINY, weights_only=True)
    c = ref["config"]
    x = torch.randn(*ref["input_shape"], generator=torch.Generator().manual_seed(ref["input_seed"]))
    for impl in ("reference", "fast"):
        model = SpecViT(
            embed_dim=c["embed_dim"],
            depth=c["depth"],
            num_heads=c["num_heads"],
            mlp_ratio=c["mlp_ratio"],
            token_patch_size=c["token_patch_size"],
            img_size=c["img_size"],
            num_classes=c["num_classes"],
            global_pool=c["global_pool"],
            adapter_impl=impl,
        ).eval()
        report = load_pretrained(model, TINY)
        assert report.missing == () and report.unexpected == ()
        model.load_state_dict(ref["state_dict"], strict=True)  # strict too
        with torch.no_grad():
            feats = model.forward_features(x)
            out = model(x)
        assert feats.shape == ref["forward_features"].shape
        torch.testing.assert_close(feats, ref["forward_features"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out, ref["output"], atol=1e-4, rtol=1e-4)


def test_registry_and_forward_contract():
    assert {"spec_vit_tiny", "spec_vit_giant", "spec_resnet50"} <= set(list_backbones())
    vit = build_backbone("spec_vit_t", img_size=16, token_patch_size=8, depth=1)
    x = torch.randn(2, 202, 16, 16)
    assert vit.num_features == 192
    assert vit.forward_features(x).shape == (2, 1 + 4, 192)
    assert vit(x).shape == (2, 192)
    rn = build_backbone("spec_resnet50")
    assert isinstance(rn, SpecResNet50)
    assert rn.forward_features(x).shape == (2, 2048, 1, 1)
    assert rn(x).shape == (2, 2048)
    with pytest.raises(ModelError, match="unknown backbone 'spec_vit_xl'"):
        build_backbone("spec_vit_xl")
    with pytest.raises(ModelError, match="spec_vit_small"):
        build_backbone("spec_vit_small", no_such_option=1)


def _tiny_vit(**kw):
    return SpecViT(embed_dim=16, depth=1, num_heads=2, img_size=16, **kw)


@pytest.mark.parametrize("prefix", ["", "module.", "model.backbone.", "backbone._orig_mod."])
def test_load_pretrained_strips_prefixes(tmp_path, prefix):
    torch.manual_seed(0)
    src = _tiny_vit(num_classes=5)
    state = {prefix + k: v for k, v in src.state_dict().items()}
    state["momentum_backbone.x"] = torch.zeros(1)  # another module of a training checkpoint
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)  # Lightning layout
    dst = _tiny_vit()
    report = load_pretrained(dst, path)
    assert report.prefix == prefix
    assert report.missing == ()
    leftover = {"vit_core.head.weight", "vit_core.head.bias"}
    if prefix:  # keys outside the prefix belong to other modules
        assert report.ignored == 1
    else:
        assert (report.ignored, leftover) == (0, leftover - {"momentum_backbone.x"})
        leftover.add("momentum_backbone.x")
    assert set(report.unexpected) == leftover
    for k, v in dst.state_dict().items():
        assert torch.equal(v, src.state_dict()[k]), k
    assert "loaded" in report.summary()
    assert type(report).from_dict(report.to_dict()) == report


def test_load_pretrained_missing_and_mismatched_keys(tmp_path):
    src = _tiny_vit().state_dict()
    partial = {k: v for k, v in src.items() if not k.startswith("spectral_adapter.3.")}
    with pytest.raises(CheckpointError, match=r"encoder keys missing.*spectral_adapter\.3\.weight"):
        load_pretrained(_tiny_vit(), partial)
    report = load_pretrained(_tiny_vit(), partial, strict_encoder=False)
    assert "spectral_adapter.3.weight" in report.missing_encoder
    # a missing head or BN counter is fine
    no_head = {k: v for k, v in src.items() if not k.endswith("num_batches_tracked")}
    assert load_pretrained(_tiny_vit(num_classes=3), no_head).missing_encoder == ()
    bad = dict(src, **{"vit_core.pos_embed": torch.zeros(1, 3, 16)})
    with pytest.raises(CheckpointError, match="vit_core.pos_embed"):
        load_pretrained(_tiny_vit(), bad)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_pretrained(_tiny_vit(), tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_pretrained(_tiny_vit(), tmp_path / "junk.pt")


def test_banded_weight_is_the_conv():
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(3, 4, 5, stride=2, padding=1, bias=False)
    from spectralearth_build.train.models.adapter import ConvSpec

    spec = ConvSpec(3, 4, 5, 2, 1)
    x = torch.randn(6, 3, 17)
    idx = banded_index(spec, 17)
    rows = x.permute(0, 2, 1).reshape(6, -1)  # position-major features
    y = (rows @ banded_weight(conv.weight.unsqueeze(-1).unsqueeze(-1), idx)).reshape(6, -1, 4)
    torch.testing.assert_close(y, conv(x).permute(0, 2, 1))
    assert adapter_positions(202) == [202, 40, 8, 2]


def _adapters(dtype):
    ref = reference_adapter().to(dtype)
    variants = {"reference": ref}
    for name, kw in {
        "fast": {},
        "recompute": {"recompute": True},
        "bn_module": {"fold": False},
    }.items():
        m = copy.deepcopy(ref)
        m.impl = "fast"
        m.recompute = kw.get("recompute", False)
        m.fold_first_layer = kw.get("fold", True)
        variants[name] = m
    return variants


def _run(model, x, train):
    model.train(train)
    for _ in range(2):  # two steps: running statistics move twice
        y = model(x)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    (y * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return y.detach(), grads, model.state_dict()


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["f64", "f32"]
)
def test_fast_adapter_equals_reference(train, dtype, tol):
    x = torch.randn(2, 202, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(3))
    variants = _adapters(dtype)
    y0, g0, sd0 = _run(variants.pop("reference"), x, train)
    scale = max(g.abs().max() for g in g0.values())
    for name, model in variants.items():
        y, g, sd = _run(model, x, train)
        assert y.shape == (2, 128, 8, 8)
        torch.testing.assert_close(y, y0, atol=tol * y0.abs().max(), rtol=0, msg=name)
        for k in g0:  # gradients of every parameter, relative to the largest one
            assert (g[k] - g0[k]).abs().max() <= tol * scale, (name, k)
        assert sd.keys() == sd0.keys()
        for k in sd0:  # running statistics and num_batches_tracked
            torch.testing.assert_close(sd[k], sd0[k], atol=tol, rtol=tol, msg=(name, k))


def test_adapter_dispatch_and_input_checks():
    ad = SpectralAdapter()
    assert ad.resolved_impl(torch.zeros(1, 202, 2, 2)) == "reference"  # auto: fast on CUDA only
    assert SpectralAdapter("fast").resolved_impl(torch.zeros(1)) == "fast"
    with pytest.raises(ValueError, match="impl must be one of"):
        SpectralAdapter("slow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(B, bands, H, W\)"):
        ad(torch.zeros(202, 4, 4))
    # same state_dict keys whatever the implementation
    assert SpectralAdapter("fast").state_dict().keys() == ad.state_dict().keys()


@pytest.mark.parametrize(
    "methods",
    [
        "plain,mae",
        pytest.param("plain,moco,dino,mae", marks=pytest.mark.slow),  # the full --tiny run
    ],
)
def test_throughput_benchmark_runs_tiny_on_cpu(tmp_path, methods):
    out = tmp_path / "tt.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--device", "cpu",
           "--tiny", "--methods", methods, "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["tiny"]
    done = [c for c in res["cases"] if "samples_per_s" in c]
    assert {(c["method"], c["impl"]) for c in done} == {
        (m, i) for m in methods.split(",") for i in ("reference", "ours")
    }
    for c in done:
        parts = c["adapter_ms"] + c["backbone_ms"] + c["loss_heads_ms"] + c["optimiser_ms"]
        assert parts == pytest.approx(c["total_ms"], rel=0.05)
        assert c["ref_flops_per_sample"] > 0
    assert {a["variant"] for a in res["adapter_alone"]} >= {"reference", "fast"}
    assert res["end_to_end"]["status"] == "skipped"


def test_throughput_benchmark_end_to_end_runs_tiny_on_cpu(tmp_path):
    """The end-to-end mode on a 16 px store: the store-fed step, both synthetic baselines, the
    loader alone per worker count, and only the methods asked for."""
    from spectralearth_build.synthstore import write_synthetic_store

    store = tmp_path / "store"
    write_synthetic_store(store, n_locations=6, max_views=2, patch_px=16, seed=1)
    out = tmp_path / "e2e.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--device", "cpu",
           "--tiny", "--e2e-only", "--methods", "mae", "--data", str(store), "--workers", "1",
           "--loader-workers", "1,2", "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    e2e = json.loads(out.read_text())["end_to_end"]
    assert e2e["status"] == "ok"
    (case,) = e2e["cases"]
    assert case["method"] == "mae" and "error" not in case, case
    for key in ("samples_per_s", "synthetic_same_step_samples_per_s",
                "synthetic_with_transforms_samples_per_s"):  # fmt: skip
        assert case[key] > 0
    assert case["ratio_to_synthetic_with_transforms"] == pytest.approx(
        case["samples_per_s"] / case["synthetic_with_transforms_samples_per_s"], abs=1e-3
    )
    assert case["loader_settings"]["num_workers"] == 1
    alone = json.loads(out.read_text())["loader_alone"]
    assert alone[0]["workers"] == "in process" and alone[0]["ms_per_view_cpu"] > 0
    assert [r["workers"] for r in alone[1:]] == [1, 2]
    assert all(r["views_per_s"] > 0 for r in alone[1:])


@pytest.mark.parametrize("shape", [(7,), (4, 3, 5)])
def test_fixed_gather_matches_indexing_forward_and_backward(shape):
    """The adapter's gather with its row-sum backward equals autograd's advanced indexing."""
    from spectralearth_build.train.models.adapter import fixed_gather

    g = torch.Generator().manual_seed(0)
    src = torch.randn(shape, dtype=torch.float64, generator=g, requires_grad=True)
    n = src.numel()
    index = torch.randint(0, n + 1, (9, 11), generator=g)  # repeats and the zero slot
    index[0, 0] = n
    up = torch.randn(9, 11, dtype=torch.float64, generator=g)
    ours = fixed_gather(src, index)
    (ours * up).sum().backward()
    grad_ours = src.grad.clone()
    src.grad = None
    ref = torch.cat([src.reshape(-1), src.new_zeros(1)])[index]
    (ref * up).sum().backward()
    assert torch.equal(ours, ref)
    torch.testing.assert_close(grad_ours, src.grad, rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_compile_trunks_keeps_keys_outputs_and_gradients():
    """Compiling the trunks (blocks / stages) in place changes no key, output or gradient."""
    from spectralearth_build.train.models import compile_trunks

    torch.manual_seed(0)
    vit = build_backbone(
        "spec_vit_tiny", embed_dim=32, depth=2, num_heads=2, img_size=16, adapter_impl="fast"
    )
    holder = torch.nn.ModuleDict({"a": vit, "b": copy.deepcopy(vit)})
    eager = copy.deepcopy(vit)
    keys = list(holder.state_dict())
    assert compile_trunks(holder, backend="aot_eager") == 2  # both encoders, none twice
    assert list(holder.state_dict()) == keys
    x = torch.randn(2, 202, 16, 16)
    out_c, out_e = vit(x), eager(x)
    torch.testing.assert_close(out_c, out_e)
    out_c.square().sum().backward()
    out_e.square().sum().backward()
    for (name, p), (_, q) in zip(vit.named_parameters(), eager.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
