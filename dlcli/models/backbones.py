"""Pretrained backbones: torchvision's classification networks (timm's with `source: timm`) as a layer of the list.

A backbone is such a network without its classification layer, which the config's own head replaces (the `backbone`
preset adds `dropout` and `dense: <classes>`). `output: pooled` keeps everything before that layer and gives the
vector it took (512 for resnet18, 1024 for mobilenet_v3_small); `output: features` stops before the network's own
global pooling and gives its last feature map (C, H, W) (a vision transformer's tokens (T, D)). Parameters keep
torchvision's (timm's) names under `net.`: `backbone_1.net.layer4.0.conv1.weight`.

Weights: `DEFAULT`, a weights name (`IMAGENET1K_V1`), `none`, or a file. Named weights come through torchvision's
cache, TORCH_HOME/hub/checkpoints/ (downloaded once); a file is read with torch's weights-only loader (or as
safetensors) and taken for what the architecture's DEFAULT weights are: the same layers and the same input pipeline.
`input_spec` says what the weights expect (mean, std, image size); dlcli.finetune makes that the run's normaliser.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dlcli.errors import BAD_INPUT, RUNTIME, DlcliError, closest

AUX = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}  # auxiliary classifiers: training-time only
TRANSFORM_INPUT = ("googlenet", "inception_v3")  # their weights were trained on inputs scaled another way
POOLING = ("avgpool", "classifier", "fc", "head", "heads")  # a network's first module after its feature map
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
TIMM_HINT = 'source: timm needs the timm package: pip install "dlcli[timm]"'


class ShapeError(ValueError):
    """A backbone the config cannot have: unknown architecture or weights, or an input it cannot take. The layer
    registry reports it with the layer's place in the model (dlcli.models.layers.Backbone)."""


@dataclass
class InputSpec:
    """What a backbone's weights were trained on: RGB mean and std on a 0-1 scale (None for random weights) and
    the image size (height, width) to resize to (None: the data's own)."""

    mean: list[float] | None
    std: list[float] | None
    size: tuple[int, int] | None


def _pair(v) -> tuple[int, int] | None:
    if v is None:
        return None
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _looks_like_file(weights: str) -> bool:
    return "/" in weights or "\\" in weights or weights.lower().endswith(WEIGHT_SUFFIXES) or Path(weights).is_file()


# ---------------------------------------------------------------- torchvision


def torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)  # the classification networks (not detection, segmentation, video)


def _check_arch(arch: str, names: list[str], source: str) -> None:
    if arch not in names:
        raise ShapeError(f"backbone: unknown {source} architecture '{arch}'{closest(arch, names)}; "
                         "`dlcli backbones` lists them")


def torchvision_weights(entry):
    """(the weights enum member, or None; the weights file, or None) that `entry.weights` names."""
    import torchvision.models as tvm

    if not entry.pretrained:
        return None, None
    _check_arch(entry.arch, torchvision_names(), "torchvision")
    enum = tvm.get_model_weights(entry.arch)
    name = entry.weights.removeprefix(enum.__name__ + ".")
    if name == "DEFAULT":
        return enum.DEFAULT, None
    if name in enum.__members__:
        return enum[name], None
    if _looks_like_file(entry.weights):
        return None, Path(entry.weights).expanduser()
    raise ShapeError(f"backbone {entry.arch}: unknown weights '{entry.weights}' (DEFAULT is {enum.DEFAULT.name}; "
                     f"valid: DEFAULT, {', '.join(m.name for m in enum)}, none, or a weights file's path)")


def _meta_weights(entry):
    """The weights whose recipe (input pipeline, construction) applies: the named ones, or DEFAULT for a file."""
    import torchvision.models as tvm

    member, path = torchvision_weights(entry)
    return member if member is not None or path is None else tvm.get_model_weights(entry.arch).DEFAULT


def cache_path(member) -> Path:
    """Where torchvision keeps (and looks for) a weights file: TORCH_HOME/hub/checkpoints/<the url's file name>."""
    from urllib.parse import urlparse

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(member.url).path)


def cache_dir(source: str = "torchvision") -> str:
    """Where named weights are kept: torchvision's TORCH_HOME/hub/checkpoints/, timm's Hugging Face cache."""
    if source == "timm":
        try:
            from huggingface_hub.constants import HF_HUB_CACHE
        except ImportError:
            return "the Hugging Face cache"
        return f"{HF_HUB_CACHE}/"
    return f"{Path(torch.hub.get_dir()) / 'checkpoints'}/"


def input_spec(entry) -> InputSpec:
    """The mean, std and image size the backbone's weights expect; `image_size` in the config overrides the size."""
    size = _pair(entry.image_size)
    if entry.source == "timm":
        if not entry.pretrained:
            return InputSpec(None, None, size)
        cfg = _timm_cfg(entry)
        return InputSpec(list(cfg.mean), list(cfg.std), size or tuple(cfg.input_size[-2:]))
    meta = _meta_weights(entry)
    if meta is None:
        return InputSpec(None, None, size)
    t = meta.transforms()
    return InputSpec(list(t.mean), list(t.std), size or (t.crop_size[0], t.crop_size[0]))


def _construction(arch: str, meta, size: tuple[int, int]) -> dict:
    """The arguments torchvision's builder would pass for these weights (their class count, auxiliary heads, input
    transform), and the input size for the networks built for one (vision transformers, MaxViT)."""
    kwargs = {}
    if meta is not None:
        kwargs["num_classes"] = len(meta.meta["categories"])
        if arch in TRANSFORM_INPUT:
            kwargs.update(transform_input=True, aux_logits=True, init_weights=False)
    elif arch in TRANSFORM_INPUT:
        kwargs["init_weights"] = True  # torchvision's own default, said out loud (it warns otherwise)
    if arch.startswith("vit_"):
        if size[0] != size[1]:
            raise ShapeError(f"backbone {arch}: takes square images, not {size[0]}x{size[1]}: set image_size: N")
        kwargs["image_size"] = size[0]
    elif arch == "maxvit_t":
        kwargs["input_size"] = size
    return kwargs


def _torchvision_net(entry, size: tuple[int, int], pretrained: bool):
    import torchvision.models as tvm

    _check_arch(entry.arch, torchvision_names(), "torchvision")
    member, path = torchvision_weights(entry)
    meta = _meta_weights(entry)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            net = tvm.get_model(entry.arch, **_construction(entry.arch, meta, size))
    except (AssertionError, ValueError, RuntimeError) as err:
        raise ShapeError(f"backbone {entry.arch}: cannot be built for {size[0]}x{size[1]} images ({_first(err)})") \
            from None
    removed = strip(net, entry.arch, entry.output)
    if pretrained and (member is not None or path is not None):
        state = read_weights(path) if path is not None else named_weights(entry.arch, member)
        metadata = getattr(state, "_metadata", None)
        state = _densenet_keys(state)
        if entry.arch.startswith("vit_") and state.get("encoder.pos_embedding") is not None:
            state = _resize_positions(net, state)
        load_into(net, with_metadata(state, metadata), removed,
                  str(path) if path is not None else f"{entry.arch} weights {member.name}")
    return net


def named_weights(arch: str, member) -> dict:
    """Named weights from torchvision's cache; not cached: downloaded there once, or a one-line error saying which file
    to fetch and where to put it."""
    path = cache_path(member)
    if not path.is_file():
        match = torch.hub.HASH_REGEX.search(path.name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(member.url, str(path), match.group(1) if match else None,
                                           progress=sys.stderr.isatty())
        except Exception as err:  # offline (URLError), a proxy, a full disk, a hash mismatch: the same way out
            raise DlcliError(f"backbone {arch}: weights {member.name} are not in {path.parent}/ and could not be "
                             f"downloaded ({_first(err)}): fetch {member.url} and put it at {path}, or give a weights "
                             "file's path as weights", RUNTIME) from None
    return read_weights(path)


def read_weights(path: Path) -> dict:
    """A state dict from a file: torch's weights-only loader (never runs code from it), or safetensors."""
    if not path.is_file():
        raise DlcliError(f"backbone weights file {path} not found", BAD_INPUT)
    try:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise DlcliError(f'{path}: reading .safetensors files needs safetensors: pip install "dlcli[timm]"',
                                 BAD_INPUT) from None
            state = load_file(str(path))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
    except DlcliError:
        raise
    except Exception as err:
        raise DlcliError(f"{path}: not a readable weights file ({_first(err)})", RUNTIME) from None
    for key in ("state_dict", "model", "module"):  # a training checkpoint holding the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DlcliError(f"{path}: not a state dict (a mapping of parameter names to tensors)", RUNTIME)
    metadata = getattr(state, "_metadata", None)  # module versions: MNASNet loads its published weights by them
    for prefix in ("module.", "_orig_mod."):  # saved from DistributedDataParallel or torch.compile
        if all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
            if metadata is not None:
                metadata = {k.removeprefix(prefix.rstrip(".")).removeprefix("."): v for k, v in metadata.items()}
    return with_metadata(state, metadata)


def with_metadata(state: dict, metadata) -> dict:
    """`state` as load_state_dict takes it with module versions (torch keeps them beside a state dict's tensors)."""
    from collections import OrderedDict

    out = OrderedDict(state)
    if metadata is not None:
        out._metadata = metadata
    return out


DENSE_OLD_KEYS = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _densenet_keys(state: dict) -> dict:
    """DenseNet's published weights name `norm.1`, as torchvision's loader renames to `norm1`."""
    return {(f"{m[1]}{m[2]}" if (m := DENSE_OLD_KEYS.match(k)) else k): v for k, v in state.items()}


def _resize_positions(net, state: dict) -> dict:
    """A vision transformer at another image size than its weights': their position embeddings interpolated."""
    from torchvision.models.vision_transformer import interpolate_embeddings

    if state["encoder.pos_embedding"].shape == net.encoder.pos_embedding.shape:
        return state
    return interpolate_embeddings(net.image_size, net.patch_size, state)


def load_into(net, state: dict, removed: list[str], what: str) -> None:
    """Load every tensor the stripped network has; the file's classifier (and auxiliary heads) are left out."""
    kept = {k: v for k, v in state.items() if not any(k == r or k.startswith(r + ".") for r in removed)}
    # Files without module versions (safetensors) are taken to be of this torchvision's.
    metadata = getattr(state, "_metadata", None) or getattr(net.state_dict(), "_metadata", None)
    try:
        missing, unexpected = net.load_state_dict(with_metadata(kept, metadata), strict=False)
    except RuntimeError as err:
        found = re.search(r"size mismatch for [^\n]*", str(err))
        raise DlcliError(f"{what}: does not fit the architecture ({found[0] if found else _first(err)})",
                         RUNTIME) from None
    if missing or unexpected:
        said = [f"{len(missing)} of its tensors missing, e.g. {missing[0]}" if missing else "",
                f"{len(unexpected)} it does not have, e.g. {unexpected[0]}" if unexpected else ""]
        raise DlcliError(f"{what}: not weights of this architecture ({'; '.join(s for s in said if s)})", RUNTIME)


def _head_name(net, arch: str) -> str:
    """The classification layer: the last Linear (SqueezeNet's is a 1x1 convolution)."""
    if arch.startswith("squeezenet"):
        return "classifier.1"
    return [name for name, m in net.named_modules() if isinstance(m, nn.Linear)][-1]


def strip(net, arch: str, output: str) -> list[str]:
    """Remove the classification layer (pooled) or everything from the global pooling on (features), and the
    auxiliary classifiers; returns the names removed. The network then runs through BackboneModule."""
    removed = []
    for name in AUX.get(arch, ()):
        if getattr(net, name, None) is not None:
            setattr(net, name, None)
            removed.append(name)
    if arch in AUX:
        net.aux_logits = False
    if output == "pooled":
        head = _head_name(net, arch)
        net.set_submodule(head, nn.Identity())
        return removed + [head]
    names = [name for name, _ in net.named_children()]
    cut = next(i for i, name in enumerate(names) if name in POOLING)
    if arch.startswith("vit_"):
        cut = names.index("heads")
    for name in names[cut:]:
        setattr(net, name, None)
        removed.append(name)
    return removed


def feature_steps(net, arch: str, output: str) -> tuple[str, list[str]]:
    """How BackboneModule runs the stripped network: ('net', []) calls it whole; ('vit', []) gives its tokens;
    ('steps', names) runs its remaining children in order."""
    if output == "pooled":
        return "net", []
    if arch.startswith("vit_"):
        return "vit", []
    return "steps", [name for name, _ in net.named_children()]


class BackboneModule(nn.Module):
    """A stripped torchvision or timm network, run as its configuration says (see `feature_steps`)."""

    def __init__(self, net, mode: str, steps: list[str], transform_input: bool = False, final_relu: bool = False,
                 channels_last_output: bool = False):
        super().__init__()
        self.net, self.mode, self.steps = net, mode, list(steps)
        self.transform_input, self.final_relu = transform_input, final_relu
        self.channels_last_output = channels_last_output  # timm networks that give (B, H, W, C)

    def forward(self, x):
        net = self.net
        if self.mode == "net":
            x = net(x)
        elif self.mode == "vit":
            x = net._process_input(x)
            x = torch.cat([net.class_token.expand(x.shape[0], -1, -1), x], dim=1)
            x = net.encoder(x)
        else:
            if self.transform_input:
                x = net._transform_input(x)
            for name in self.steps:
                module = getattr(net, name)
                for part in (module if isinstance(module, nn.ModuleList) else (module,)):
                    x = part(x)
            if self.final_relu:
                x = torch.relu(x)
        if self.channels_last_output and x.dim() == 4:
            x = x.permute(0, 3, 1, 2)
        return x

    def extra_repr(self):
        return f"mode={self.mode}"


# ---------------------------------------------------------------- timm


def _timm():
    try:
        import timm
    except ImportError:
        raise DlcliError(TIMM_HINT, BAD_INPUT) from None
    return timm


def _timm_name(entry) -> tuple[str, bool, Path | None]:
    """(timm's model name, with a weights tag where one is named; whether to fetch its weights; a weights file)."""
    timm = _timm()
    arch = entry.arch
    if not timm.is_model(arch):
        raise ShapeError(f"backbone: unknown timm architecture '{arch}'{closest(arch, timm.list_models())}")
    if not entry.pretrained:
        return arch, False, None
    if entry.weights == "DEFAULT":
        return arch, True, None
    if _looks_like_file(entry.weights):
        return arch, False, Path(entry.weights).expanduser()
    tags = [name.split(".", 1)[1] for name in timm.list_pretrained(f"{arch.split('.')[0]}.*")]
    if entry.weights not in tags:
        raise ShapeError(f"backbone {arch}: unknown timm weights '{entry.weights}' "
                         f"(valid: DEFAULT, {', '.join(tags) or 'none published'}, none, or a weights file's path)")
    return f"{arch.split('.')[0]}.{entry.weights}", True, None


def _timm_cfg(entry):
    timm = _timm()
    name, _, _ = _timm_name(entry)
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise ShapeError(f"backbone {entry.arch}: timm has no pretrained configuration for it")
    return cfg


def _timm_net(entry, size: tuple[int, int], pretrained: bool):
    timm = _timm()
    name, fetch, path = _timm_name(entry)
    kwargs = {"num_classes": 0}
    if entry.output == "features":
        kwargs["global_pool"] = ""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and cfg.fixed_input_size:  # vision transformers: built for one size (weights resampled)
        kwargs["img_size"] = size
    try:
        net = timm.create_model(name, pretrained=fetch and pretrained, **kwargs)
    except (AssertionError, ValueError, RuntimeError, TypeError) as err:
        if fetch and pretrained and not isinstance(err, (AssertionError, TypeError)):
            raise _timm_offline(name, cfg, err) from None
        raise ShapeError(f"backbone {name}: cannot be built for {size[0]}x{size[1]} images ({_first(err)})") from None
    except Exception as err:  # huggingface_hub's and urllib's errors when the weights cannot be fetched
        raise _timm_offline(name, cfg, err) from None
    if pretrained and path is not None:
        heads = cfg.classifier if cfg is not None else "head"
        removed = [heads] if isinstance(heads, str) else list(heads)
        load_into(net, read_weights(path), removed, str(path))
    return net


def _timm_offline(name: str, cfg, err) -> DlcliError:
    where = f"https://huggingface.co/{cfg.hf_hub_id}" if cfg is not None and cfg.hf_hub_id else \
        (cfg.url if cfg is not None and cfg.url else "its published file")
    return DlcliError(f"backbone {name}: timm could not fetch its weights ({_first(err)}): download them from {where} "
                      "and give the file's path as weights", RUNTIME)


# ---------------------------------------------------------------- the layer


def build_backbone(entry, shape, pretrained: bool = True):
    """(BackboneModule, output shape) for an image input (3, H, W)."""
    if len(shape) != 3:
        raise ShapeError(f"backbone needs an image input (channels, height, width), got shape {tuple(shape)}")
    c, h, w = shape
    if c != 3:
        raise ShapeError(f"backbone {entry.arch} takes RGB images (3 channels), got {c}: as the model's first layer "
                         "it gets grayscale images repeated to 3 channels")
    if entry.source == "timm":
        net = _timm_net(entry, (h, w), pretrained)
        module = BackboneModule(net, "net", [], channels_last_output=getattr(net, "output_fmt", "NCHW") == "NHWC")
    else:
        net = _torchvision_net(entry, (h, w), pretrained)
        mode, steps = feature_steps(net, entry.arch, entry.output)
        module = BackboneModule(net, mode, steps, transform_input=entry.arch in TRANSFORM_INPUT and
                                getattr(net, "transform_input", False),
                                final_relu=entry.arch.startswith("densenet") and entry.output == "features")
    return module, probe(module, shape, entry.arch)


def probe(module, shape, arch: str) -> tuple[int, ...]:
    """The output shape (without the batch axis), from a forward pass on the meta device (no arithmetic done)."""
    from torch.func import functional_call

    tensors = {k: torch.empty_like(v, device="meta") for k, v in [*module.named_parameters(),
                                                                   *module.named_buffers()]}
    was = module.training
    module.eval()
    try:
        out = functional_call(module, tensors, (torch.empty(2, *shape, device="meta"),))
    except Exception as err:
        raise ShapeError(f"backbone {arch}: cannot take {shape[1]}x{shape[2]} images ({_first(err)}); set a larger "
                         "image_size") from None
    finally:
        module.train(was)
    return tuple(out.shape[1:])


def _first(err) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


# ---------------------------------------------------------------- `dlcli backbones`


@contextlib.contextmanager
def _parameters_on_meta():
    """Build networks without memory for their weights: torch.empty (what layers allocate parameters with) makes
    meta tensors; other tensors stay real, so networks that compute their widths with torch (RegNet) still build."""
    from torch.overrides import TorchFunctionMode

    class EmptyOnMeta(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.empty and kwargs.get("device") is None:
                kwargs["device"] = "meta"
            return func(*args, **kwargs)

    with EmptyOnMeta():
        yield


def _matches(name: str, pattern: str | None) -> bool:
    if not pattern:
        return True
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatch(name, pattern)
    return pattern.lower() in name.lower()


def list_backbones(pattern: str | None = None, source: str = "torchvision") -> list[dict]:
    """Architectures matching `pattern` (a glob, or a part of the name): the backbone's parameters (without the
    classification layer), the image size its default weights take, the weights, and which are in the local cache."""
    if source == "timm":
        return _list_timm(pattern)
    import torchvision.models as tvm

    rows = []
    for arch in torchvision_names():
        if not _matches(arch, pattern):
            continue
        enum = tvm.get_model_weights(arch)
        default = enum.DEFAULT
        size = default.transforms().crop_size[0]
        with _parameters_on_meta(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            net = tvm.get_model(arch, **_construction(arch, default, (size, size)))
        strip(net, arch, "pooled")
        rows.append({"arch": arch, "parameters": sum(p.numel() for p in net.parameters()), "image_size": size,
                     "default": default.name, "weights": [m.name for m in enum],
                     "cached": [m.name for m in enum if cache_path(m).is_file()]})
    return rows


def _list_timm(pattern: str | None) -> list[dict]:
    timm = _timm()
    rows = []
    names = [n for n in timm.list_models() if _matches(n, pattern)]
    for arch in names:
        cfg = timm.models.get_pretrained_cfg(arch)
        try:
            with _parameters_on_meta(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net = timm.create_model(arch, num_classes=0)
            count = sum(p.numel() for p in net.parameters())
        except Exception:
            count = None
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
        rows.append({"arch": arch, "parameters": count,
                     "image_size": cfg.input_size[-1] if cfg is not None else None,
                     "default": tags[0] if tags else None, "weights": tags, "cached": _timm_cached(cfg)})
    return rows


def _timm_cached(cfg) -> list[str]:
    if cfg is None or not cfg.hf_hub_id:
        return []
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return []
    repo = cfg.hf_hub_id.split("@")[0]
    found = any(isinstance(try_to_load_from_cache(repo, f), str) for f in ("model.safetensors", "pytorch_model.bin"))
    return [cfg.tag or "default"] if found else []
