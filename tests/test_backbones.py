"""Pretrained backbones: every torchvision family builds as a dlcli model, a weights file gives torchvision's (and
timm's) outputs through dlcli, named weights come from the local cache or fail offline in one line, and a run trained
on them preprocesses, evaluates and predicts the way its weights expect. Offline: nothing is downloaded."""

import json
import urllib.error
import warnings
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm

from dlcli.config import validate_config
from dlcli.data.images import load_image
from dlcli.data.bundle import DataBundle, Normalizer, Split
from dlcli.errors import DlcliError
from dlcli.finetune import model_for
from dlcli.models import build_model
from tests.conftest import tiny_config
from tests.test_image_folder import make_folder

# One small member of every family torchvision has, at a small input it takes (ViT is built for its input size;
# AlexNet, Inception and MaxViT need larger images).
FAMILIES = {"alexnet": 64, "convnext_tiny": 32, "densenet121": 32, "efficientnet_b0": 32, "googlenet": 32,
            "inception_v3": 75, "maxvit_t": 224, "mnasnet0_5": 32, "mobilenet_v2": 32, "mobilenet_v3_small": 32, "regnet_x_400mf": 32,
            "resnet18": 32, "shufflenet_v2_x0_5": 32, "squeezenet1_1": 32, "swin_t": 32, "vgg11": 32,
            "vit_b_16": 32}
R18_FILE = "resnet18-f37072fd.pth"  # the file name in torchvision's url of resnet18's DEFAULT weights


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch, tmp_path):
    """An empty TORCH_HOME, and any download attempt fails as it would offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    torch.set_num_threads(2)


def backbone_cfg(model: dict, dataset: dict | None = None):
    return validate_config({"data": dataset or {"dataset": "cifar10"}, "model": model})


def randomize_batchnorm(net):
    """Running statistics other than the fresh 0 and 1, so that loading them visibly matters."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_the_families_listed_are_all_of_torchvisions():
    families = {tvm.get_model_builder(name).__module__ for name in tvm.list_models(module=tvm)}
    assert {tvm.get_model_builder(name).__module__ for name in FAMILIES} == families


@pytest.mark.parametrize("arch", FAMILIES)
def test_every_family_builds_with_the_dataset_classes(arch):
    size = FAMILIES[arch]
    torch.manual_seed(0)
    cfg = backbone_cfg({"type": "backbone", "arch": arch, "weights": "none", "dropout": 0.1})
    model, rows = build_model(cfg.model, (3, size, size), 7)
    assert [r.name for r in rows] == ["backbone_1", "dropout_1", "dense_1"] and rows[-1].output_shape == (7,)
    if size <= 64:  # shapes come from a pass on the meta device; a real one where it is cheap
        with torch.no_grad():
            assert model.eval()(torch.randn(1, 3, size, size)).shape == (1, 7)
    names = [n for n, _ in model.named_parameters()]
    assert all(n.startswith(("backbone_1.net.", "dense_1.")) for n in names)
    assert not any("aux" in n.lower() for n in names)  # training-only heads are gone


@pytest.mark.parametrize("arch, pool, shape", [
    ("mobilenet_v3_small", "global_avg_pool2d", (576, 1, 1)), ("densenet121", "global_avg_pool2d", (1024, 1, 1)),
    ("vit_b_16", "global_avg_pool1d", (5, 768))])  # a ViT gives its tokens: the class token and 2 x 2 patches
def test_the_layer_form_gives_feature_maps_for_the_seeds_style_head(arch, pool, shape):
    cfg = backbone_cfg({"type": "sequential", "layers": [
        {"backbone": {"arch": arch, "weights": "none"}}, pool, {"dropout": 0.2}, {"dense": 4}]})
    model, rows = build_model(cfg.model, (3, 32, 32), 4)
    assert rows[0].output_shape == shape and rows[1].output_shape == (shape[-1] if len(shape) == 2 else shape[0],)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("arch, kwargs", [
    ("resnet18", {}), ("mobilenet_v3_small", {}),
    ("googlenet", {"aux_logits": True, "transform_input": True, "init_weights": False})])  # as its weights are
def test_a_weights_file_gives_torchvisions_logits(tmp_path, arch, kwargs):
    torch.manual_seed(0)
    reference = tvm.get_model(arch, **kwargs)
    randomize_batchnorm(reference)
    reference.eval()
    path = tmp_path / f"{arch}.pth"
    torch.save(reference.state_dict(), path)
    head = [m for m in reference.modules() if isinstance(m, torch.nn.Linear)][-1]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference(x)[:, :10]
    layer = {"arch": arch, "weights": str(path)}
    for model_cfg in ({"type": "backbone", **layer},  # the preset, and the layer form with a head of its own
                      {"type": "sequential", "layers": [{"backbone": layer}, "global_avg_pool2d", {"dense": 10}]}):
        if arch != "resnet18" and model_cfg["type"] == "sequential":
            continue  # their classifiers hold more than the last layer: only the pooled output meets it
        model, _ = build_model(backbone_cfg(model_cfg).model, (3, 32, 32), 10)
        dense = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            dense.weight.copy_(head.weight[:10])
            dense.bias.copy_(head.bias[:10])
            assert torch.allclose(model.eval()(x), expected, atol=1e-4)


def test_a_file_that_is_not_the_architecture_is_one_error(tmp_path):
    path = tmp_path / "mobilenet.pth"
    torch.save(tvm.mobilenet_v2().state_dict(), path)
    cfg = backbone_cfg({"type": "backbone", "arch": "resnet18", "weights": str(path)})
    with pytest.raises(DlcliError, match="mobilenet.pth: not weights of this architecture"):
        build_model(cfg.model, (3, 32, 32), 10)
    cfg = backbone_cfg({"type": "backbone", "arch": "resnet18", "weights": str(tmp_path / "missing.pth")})
    with pytest.raises(DlcliError, match="missing.pth not found"):
        build_model(cfg.model, (3, 32, 32), 10)
    build_model(cfg.model, (3, 32, 32), 10, pretrained=False)  # evaluate and predict never need it


def test_default_weights_come_from_torchvisions_cache(tmp_path, cli):
    torch.manual_seed(3)
    net = tvm.resnet18()
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / R18_FILE
    cached.parent.mkdir(parents=True)
    torch.save(net.state_dict(), cached)
    model, _ = build_model(backbone_cfg({"type": "backbone", "arch": "resnet18"}).model, (3, 32, 32), 10)
    assert torch.equal(model.backbone_1.net.layer4[1].conv2.weight, net.layer4[1].conv2.weight)
    listed = json.loads(cli("backbones", "resnet18", "--json").stdout)
    assert listed == [{"arch": "resnet18", "parameters": 11_176_512, "image_size": 224, "default": "IMAGENET1K_V1",
                       "weights": ["IMAGENET1K_V1"], "cached": ["IMAGENET1K_V1"]}]


def test_default_weights_offline_say_which_file_to_fetch_and_where(cli, write_config, tmp_path):
    cfg = tiny_config(model={"type": "backbone", "arch": "resnet18", "weights": "DEFAULT", "image_size": 32})
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    where = tmp_path / "torch_home" / "hub" / "checkpoints" / R18_FILE
    assert len(lines) == 1 and "no network in tests" in lines[0]
    assert f"fetch https://download.pytorch.org/models/{R18_FILE} and put it at {where}" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_backbones_lists_architectures_with_parameters_and_cache(cli):
    result = cli("backbones", "mobilenet")
    assert result.exit_code == 0, result.output
    for text in ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "1,517,856", "IMAGENET1K_V1 (DEFAULT)",
                 "3 architectures"):
        assert text in result.stdout
    rows = json.loads(cli("backbones", "efficientnet_b*", "--json").stdout)
    assert [r["arch"] for r in rows] == [f"efficientnet_b{i}" for i in range(8)]
    model, _ = build_model(backbone_cfg({"type": "backbone", "arch": "efficientnet_b0", "weights": "none"}).model,
                           (3, 32, 32), 1000)
    assert rows[0]["parameters"] == sum(p.numel() for p in model.backbone_1.parameters())
    assert cli("backbones", "nothing-like-it").exit_code == 1


@pytest.mark.parametrize("model, message", [
    ({"type": "backbone", "arch": "resnet19"}, "unknown torchvision architecture 'resnet19' (did you mean 'resnet18'?)"),
    ({"type": "backbone", "arch": "resnet18", "weights": "IMAGENET9K"},
     "unknown weights 'IMAGENET9K' (DEFAULT is IMAGENET1K_V1; valid: DEFAULT, IMAGENET1K_V1"),
    ({"type": "backbone", "arch": "alexnet", "weights": "none", "image_size": 16},
     "backbone alexnet: cannot take 16x16 images"),
    ({"type": "backbone", "arch": "vit_b_16", "weights": "none", "image_size": [32, 48]}, "takes square images"),
    ({"type": "sequential", "layers": ["flatten", {"backbone": "resnet18"}, {"dense": 3}]},
     "model.layers[1]: backbone needs an image"),
])
def test_bad_backbones_are_one_line_before_any_run(cli, write_config, tmp_path, model, message):
    result = cli("train", write_config(tiny_config(model=model)), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_pretrained_input_pipeline_follows_the_weights(tmp_path):
    """uint8 grayscale images: repeated to RGB, resized to the weights' 224, normalised with their statistics."""
    path = tmp_path / "r18.pth"
    torch.save(tvm.resnet18().state_dict(), path)
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    split = Split(x, torch.tensor([0, 1]))
    data = DataBundle(split, None, split, ["a", "b"], (1, 28, 28), Normalizer([100.0], [50.0], True))
    cfg = backbone_cfg({"type": "backbone", "arch": "resnet18", "weights": str(path)}, {"dataset": "mnist"})
    model = model_for(cfg, data)
    norm = data.normalizer
    assert norm.to_dict() == {"mean": pytest.approx([123.675, 116.28, 103.53]),
                              "std": pytest.approx([58.395, 57.12, 57.375]), "image": True, "tokens": False,
                              "channels": 3, "size": [224, 224]}
    from torchvision.transforms.v2 import functional as TF

    expected = TF.normalize(TF.resize(x.float() / 255, [224, 224], antialias=True).expand(-1, 3, -1, -1),
                            [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert torch.allclose(norm(x), expected, atol=1e-4)
    assert model.eval()(norm(x)).shape == (2, 2)
    # Float data (synthetic) keeps its own statistics; an explicit image_size replaces the weights' 224.
    floats = Split(torch.randn(2, 1, 28, 28), torch.tensor([0, 1]))
    data = DataBundle(floats, None, floats, ["a", "b"], (1, 28, 28), Normalizer([0.5], [2.0], True))
    cfg = backbone_cfg({"type": "backbone", "arch": "resnet18", "weights": str(path), "image_size": 40},
                       {"dataset": "mnist"})
    model_for(cfg, data)
    assert data.normalizer.to_dict() == {"mean": [0.5], "std": [2.0], "image": True, "tokens": False, "channels": 3,
                                         "size": [40, 40]}


def test_summary_shows_what_the_backbone_sees_and_what_is_frozen(cli, write_config):
    cfg = tiny_config(model={"type": "backbone", "arch": "resnet18", "weights": "none", "image_size": 40},
                      train={"freeze": {"layers": ["backbone"], "epochs": 2}})
    out = json.loads(cli("summary", write_config(cfg), "--json").stdout)
    assert out["input_shape"] == [3, 40, 40]  # synthetic 1 x 8 x 8, repeated to RGB, resized
    assert out["frozen"] == 11_176_512 and out["trainable"] == 512 * 3 + 3
    assert [layer["trainable"] for layer in out["layers"]] == [0, 1539]
    table = cli("summary", write_config(cfg)).stdout
    assert "1,539 trainable, 11,176,512 frozen for the first 2 epochs" in table


def test_an_image_folder_run_on_a_weights_file_evaluates_and_predicts_without_it(cli, write_config, tmp_path):
    make_folder(tmp_path / "pics", per_class=12)
    weights = tmp_path / "mnasnet.pth"
    torch.save(tvm.mnasnet0_5().state_dict(), weights)
    cfg = tiny_config(name="pics", data={"dataset": "image_folder", "root": str(tmp_path / "pics"), "channels": 1,
                                         "val_split": 0.2},
                      model={"type": "backbone", "arch": "mnasnet0_5", "weights": str(weights), "image_size": 32},
                      train={"epochs": 1, "batch_size": 16})
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / result.stdout.strip().splitlines()[-1]
    config = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))
    assert config["data"]["image_size"] == 32  # the folder is decoded at the size the backbone was given
    info = json.loads((run / "data.json").read_text())
    assert info["input_shape"] == [1, 32, 32] and info["normalization"]["channels"] == 3
    assert info["normalization"]["mean"] == pytest.approx([123.675, 116.28, 103.53])
    weights.unlink()  # the checkpoint holds every weight: evaluate and predict need no weights file
    report = json.loads(cli("evaluate", run.name, "--runs-dir", tmp_path / "runs", "--json").stdout)
    summary = json.loads((run / "summary.json").read_text())
    assert report["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-6)
    image = next((tmp_path / "pics" / "test" / "disc").iterdir())
    out = cli("predict", image, "--run", run.name, "--runs-dir", tmp_path / "runs", "--json")
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.stdout)[0]["top"]) == 3
    # the export holds the same pipeline (gray repeated to 3 channels, the weights' statistics): same probabilities
    exported = cli("export", run.name, "--format", "torchscript", "--runs-dir", tmp_path / "runs")
    assert exported.exit_code == 0, exported.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # recent torch: "torch.jit.load is deprecated"
        model = torch.jit.load(exported.stdout.strip().splitlines()[-1])
    pixels = load_image(str(image), (1, 32, 32)).permute(1, 2, 0)[None]  # decoded as predict does, N x H x W x C
    with torch.no_grad():
        probs = model(pixels)[0]
    top = json.loads(out.stdout)[0]["top"][0]
    assert info["classes"][int(probs.argmax())] == top["label"]
    assert float(probs.max()) == pytest.approx(top["probability"], abs=1e-4)


# ---------------------------------------------------------------- timm


def test_timm_backbones_load_a_weights_file(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model("resnet18")
    randomize_batchnorm(reference)
    reference.eval()
    path = tmp_path / "timm_r18.pth"
    torch.save(reference.state_dict(), path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = reference.forward_features(x)
        pooled = reference.forward_head(features, pre_logits=True)
    for output, expected in (("features", features), ("pooled", pooled)):
        cfg = backbone_cfg({"type": "sequential", "layers": [
            {"backbone": {"arch": "resnet18", "source": "timm", "weights": str(path), "output": output}},
            "global_avg_pool2d" if output == "features" else "flatten", {"dense": 3}]})
        model, rows = build_model(cfg.model, (3, 32, 32), 3)
        assert rows[0].output_shape == tuple(expected.shape[1:])
        with torch.no_grad():
            assert torch.allclose(model.eval()[0](x), expected, atol=1e-5)


def test_timm_missing_is_one_line_naming_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    cfg = backbone_cfg({"type": "backbone", "arch": "resnet18", "source": "timm", "weights": "none"})
    with pytest.raises(DlcliError, match=r'source: timm needs the timm package: pip install "dlcli\[timm\]"'):
        build_model(cfg.model, (3, 32, 32), 10)


def test_configs_finetune_example_is_valid():
    from dlcli.config import load_config

    cfg = load_config(Path(__file__).parent.parent / "configs" / "image_folder_finetune.yaml")
    assert cfg.model.type == "backbone" and cfg.train.freeze
