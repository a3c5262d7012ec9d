"""LAION-CLAP checkpoints -> audiocl model folders.

A LAION-CLAP training checkpoint (``630k-audioset-best.pt`` and its siblings)
is a pickled ``{"epoch": ..., "state_dict": {"module.<key>": tensor}}``; it is
read with ``torch.load(weights_only=True)``, so nothing but tensors and plain
values is ever unpickled. The architecture is inferred from the tensor shapes
alone (:func:`plan_laion`), every key is either mapped onto the audiocl model or
dropped with a stated reason, and an unknown key is an error, never silently
ignored. The plan is also written as ``conversion.json`` beside the model.

Layout of the result (an ordinary audiocl model folder):

- audio tower ``audio``: ``htsat`` encoder (transformers ``ClapAudioModel``)
  + ``mlp`` projection (LAION's ``audio_projection`` Sequential 0/2);
- text tower ``text``: ``hf_text`` RoBERTa with ``pooler`` pooling + ``mlp``
  projection (``text_projection``); max 77 tokens as LAION tokenises;
- ``logit_scale`` = ``logit_scale_a`` (log-space, as LAION stores it);
- ``frontend.json``: the ``laion_clap`` preset (48 kHz, 1024/480, 64 mels,
  50-14000 Hz; the log-mel torchlibrosa computes inside the LAION model), or
  ``laion_clap_fusion`` (HTK mels, 4-view fusion) for fusion checkpoints;
- ``prompts.json``: ``["This is a sound of {}."]``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiocl.errors import AudioclError
from audiocl.fsutil import atomic_write_text

LAION_PROMPTS = ["This is a sound of {}."]
#: LAION tokenises with ``max_length=77`` (CLIP's context length).
LAION_TEXT_MAX_LENGTH = 77

AUDIO_PREFIX = "towers.audio.encoder.model.audio_encoder."
TEXT_PREFIX = "towers.text.encoder.model."

# Why each non-mapped LAION key is dropped (pattern on the key without "module.").
_DROP_RULES: list[tuple[str, str]] = [
    (
        r"^audio_branch\.(spectrogram_extractor|logmel_extractor)\.",
        "torchlibrosa STFT/mel weights: audiocl computes the log-mel outside the model "
        "(frontend.json, the laion_clap preset gives the same features)",
    ),
    (
        r"^audio_branch\.(tscam_conv|head)\.",
        "HTSAT's AudioSet tagging head (527 classes): not used by CLAP embeddings",
    ),
    (
        r"^audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask$",
        "shifted-window attention mask: a constant recomputed from the window size",
    ),
    (
        r"^audio_branch\.layers\.\d+\.blocks\.\d+\.attn\.relative_position_index$",
        "relative position index: a constant recomputed from the window size (checked equal)",
    ),
    (
        r"^text_branch\.embeddings\.(position_ids|token_type_ids)$",
        "position/token-type id buffer: a constant arange/zeros, recomputed",
    ),
    (
        r"^(audio|text)_transform\.",
        "MLP-loss heads (audio_transform/text_transform): used only by LAION's training "
        "loss variant, never in embeddings",
    ),
    (
        r"^logit_scale_t$",
        "second temperature: never trains in LAION (the non-MLP CLIP loss uses logit_scale_a "
        "both ways, LAION-AI/CLAP issues #109, #115); audiocl keeps one, logit_scale = logit_scale_a",
    ),
]

_AUDIO_RENAMES = [
    ("bn0.", "batch_norm."),
    ("attn.proj.", "attention.output.dense."),
    ("attn.relative_position_bias_table", "attention.self.relative_position_bias_table"),
    ("norm1.", "layernorm_before."),
    ("norm2.", "layernorm_after."),
    ("mlp.fc1.", "intermediate.dense."),
    ("mlp.fc2.", "output.dense."),
]


_WB = r"\.(weight|bias)$"
_BN = r"\.(weight|bias|running_mean|running_var|num_batches_tracked)$"
# LAION key layouts the converter knows (after removing "module."); anything else is refused
_KNOWN_AUDIO = [
    r"^audio_branch\.bn0" + _BN,
    r"^audio_branch\.patch_embed\.(proj|norm|mel_conv2d)" + _WB,
    r"^audio_branch\.patch_embed\.fusion_model\.(local_att|global_att)\.\d+" + _BN,
    r"^audio_branch\.layers\.\d+\.blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)" + _WB,
    r"^audio_branch\.layers\.\d+\.blocks\.\d+\.attn\.relative_position_bias_table$",
    r"^audio_branch\.layers\.\d+\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$",
    r"^audio_branch\.norm" + _WB,
]
_KNOWN_TEXT = [
    r"^text_branch\.embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight$",
    r"^text_branch\.embeddings\.LayerNorm" + _WB,
    r"^text_branch\.encoder\.layer\.\d+\.attention\.self\.(query|key|value)" + _WB,
    r"^text_branch\.encoder\.layer\.\d+\.(attention\.output\.dense|attention\.output\.LayerNorm)" + _WB,
    r"^text_branch\.encoder\.layer\.\d+\.(intermediate\.dense|output\.dense|output\.LayerNorm)" + _WB,
    r"^text_branch\.pooler\.dense" + _WB,
]


@dataclass
class ConversionPlan:
    """Where every key of a LAION checkpoint goes.

    ``mapped``: ``(laion_key, audiocl_key, op)`` with ``op`` ``"copy"`` or
    ``"qkv:<i>"`` (row block ``i`` of 3 of a fused query/key/value tensor).
    ``dropped``: ``(laion_key, reason)``. ``arch``: the inferred architecture.
    ``model_config``: the audiocl :class:`~audiocl.models.ModelConfig` dict.
    """

    arch: dict[str, Any]
    model_config: dict[str, Any]
    mapped: list[tuple[str, str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        """The machine-readable mapping report (``conversion.json``)."""
        return {
            "source": "laion_clap",
            "arch": self.arch,
            "mapped": [{"from": s, "to": d, "op": op} for s, d, op in self.mapped],
            "dropped": [{"key": k, "reason": r} for k, r in self.dropped],
            "counts": {"mapped": len(self.mapped), "dropped": len(self.dropped)},
        }


def strip_checkpoint(obj: Any, source: str = "checkpoint") -> dict[str, Any]:
    """Unwrap ``{"state_dict": ...}`` and drop DataParallel's ``module.`` prefix."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise AudioclError(f"{source}: not a LAION-CLAP state dict (expected a mapping of tensors)")
    out: dict[str, Any] = {}
    for k, v in obj.items():
        k = str(k)
        out[k.removeprefix("module.")] = v
    return out


def read_laion_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a LAION-CLAP ``.pt`` with ``weights_only=True``: ``{key: Tensor}`` without ``module.``."""
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise AudioclError(f"{p}: checkpoint file not found")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        text = str(e).strip()
        if "Weights only load failed" in text:
            # the file is a pickle holding more than tensors and plain values: never unpickle it
            why = text.split("Please file an issue")[0]
            detail = next((ln.strip() for ln in why.splitlines() if "Unsupported global" in ln), "")
            msg = "holds objects other than tensors and plain values" + (f" ({detail[:160]})" if detail else "")
        else:
            msg = (text.splitlines()[0] if text else type(e).__name__)[:200]
        raise AudioclError(f"{p}: cannot read as a weights-only torch checkpoint: {msg}") from None
    sd = strip_checkpoint(obj, str(p))
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise AudioclError(f"{p}: state dict entries are not tensors: {bad[:5]}")
    return sd


def _shape(shapes: Mapping[str, Sequence[int]], key: str, source: str) -> list[int]:
    if key not in shapes:
        raise AudioclError(f"{source}: missing '{key}'; not a LAION-CLAP HTSAT + RoBERTa checkpoint")
    return [int(s) for s in shapes[key]]


def _infer_htsat(shapes: Mapping[str, Sequence[int]], spec_size: int, source: str) -> dict[str, Any]:
    a = "audio_branch."
    proj = _shape(shapes, a + "patch_embed.proj.weight", source)
    embed_dim, in_ch, ph, pw = proj
    if ph != pw:
        raise AudioclError(f"{source}: non-square HTSAT patches {ph}x{pw} are not supported")
    n_mels = _shape(shapes, a + "bn0.weight", source)[0]
    block_re = re.compile(r"^audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.")
    blocks: dict[int, set[int]] = {}
    for k in shapes:
        m = block_re.match(k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise AudioclError(f"{source}: cannot find the HTSAT stages (audio_branch.layers.N.blocks.M)")
    depths, heads, windows = [], [], []
    for i in range(len(blocks)):
        if sorted(blocks[i]) != list(range(len(blocks[i]))):
            raise AudioclError(f"{source}: HTSAT stage {i} has non-contiguous block indices")
        depths.append(len(blocks[i]))
        t = _shape(shapes, f"{a}layers.{i}.blocks.0.attn.relative_position_bias_table", source)
        heads.append(t[1])
        w = (math.isqrt(t[0]) + 1) // 2
        if (2 * w - 1) ** 2 != t[0]:
            raise AudioclError(f"{source}: relative position table of {t[0]} rows is not (2w-1)^2")
        windows.append(w)
    if len(set(windows)) != 1:
        raise AudioclError(f"{source}: HTSAT stages use different window sizes {windows}")
    fc1 = _shape(shapes, f"{a}layers.0.blocks.0.mlp.fc1.weight", source)
    if f"{a}layers.0.blocks.0.attn.qkv.bias" not in shapes:
        raise AudioclError(f"{source}: HTSAT without qkv bias is not supported")
    out_dim = _shape(shapes, a + "norm.weight", source)[0]
    if out_dim != embed_dim * 2 ** (len(depths) - 1):
        raise AudioclError(f"{source}: HTSAT output width {out_dim} != {embed_dim} * 2^{len(depths) - 1}")
    # fusion: LAION's 2-D fusion lives in the patch embedding; 1-D fusion types
    # (daf_1d/aff_1d/iaff_1d) and iaff/daf 2-D have no transformers equivalent
    fusion_type = None
    has_aff = any(k.startswith(a + "patch_embed.fusion_model.") for k in shapes)
    if any(k.startswith((a + "fusion_model.", a + "mel_conv1d.")) for k in shapes):
        raise AudioclError(f"{source}: 1-D fusion HTSAT (daf_1d/aff_1d/iaff_1d) is not supported")
    if any(".local_att2." in k or ".global_att2." in k for k in shapes):
        raise AudioclError(f"{source}: iaff_2d fusion is not supported (transformers implements aff_2d)")
    if in_ch == 4:
        fusion_type = "channel_map"
    elif has_aff:
        fusion_type = "aff_2d"
    elif a + "patch_embed.mel_conv2d.weight" in shapes:
        raise AudioclError(f"{source}: daf_2d fusion is not supported (transformers implements aff_2d)")
    elif in_ch != 1:
        raise AudioclError(f"{source}: patch embedding takes {in_ch} channels; expected 1 or 4 (channel_map)")
    patch_stride = [ph, pw]
    # a stored shifted-window mask pins the token grid: check spec_size / stride against it
    grid = spec_size // patch_stride[0]
    for i in range(len(depths)):
        key = f"{a}layers.{i}.blocks.1.attn_mask"
        res = grid // (2**i)
        if key in shapes and res > windows[0]:
            n_win = _shape(shapes, key, source)[0]
            if n_win != (res // windows[0]) ** 2:
                raise AudioclError(
                    f"{source}: attention mask of stage {i} has {n_win} windows; spec_size {spec_size} "
                    f"with patch stride {patch_stride} gives {(res // windows[0]) ** 2} (pass --spec-size)"
                )
    return {
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": heads,
        "window_size": windows[0],
        "spec_size": spec_size,
        "patch_size": ph,
        "patch_stride": patch_stride,
        "n_mels": n_mels,
        "mlp_ratio": fc1[0] / embed_dim,
        "enable_fusion": fusion_type is not None,
        "fusion_type": fusion_type,
        "output_dim": out_dim,
    }


def _infer_text(shapes: Mapping[str, Sequence[int]], text_heads: int | None, source: str) -> dict[str, Any]:
    t = "text_branch."
    vocab, hidden = _shape(shapes, t + "embeddings.word_embeddings.weight", source)
    max_pos = _shape(shapes, t + "embeddings.position_embeddings.weight", source)[0]
    type_vocab = _shape(shapes, t + "embeddings.token_type_embeddings.weight", source)[0]
    layer_re = re.compile(r"^text_branch\.encoder\.layer\.(\d+)\.")
    layers = {int(m.group(1)) for k in shapes if (m := layer_re.match(k))}
    if not layers or sorted(layers) != list(range(len(layers))):
        raise AudioclError(f"{source}: cannot find RoBERTa layers (text_branch.encoder.layer.N)")
    inter = _shape(shapes, t + "encoder.layer.0.intermediate.dense.weight", source)[0]
    if t + "pooler.dense.weight" not in shapes:
        raise AudioclError(f"{source}: the RoBERTa text branch has no pooler; LAION's embedding reads it")
    # head count leaves no trace in the tensor shapes; RoBERTa/BERT use 64-wide heads
    heads = text_heads if text_heads is not None else max(1, hidden // 64)
    if hidden % heads:
        raise AudioclError(f"{source}: text hidden size {hidden} is not divisible by {heads} heads")
    return {
        "model_type": "roberta",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "num_attention_heads": heads,
        "intermediate_size": inter,
        "max_position_embeddings": max_pos,
        "type_vocab_size": type_vocab,
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "hidden_act": "gelu",
    }


def _projection(shapes: Mapping[str, Sequence[int]], name: str, in_dim: int, source: str) -> int:
    w0 = _shape(shapes, f"{name}.0.weight", source)
    w2 = _shape(shapes, f"{name}.2.weight", source)
    if w0[1] != in_dim or w2 != [w0[0], w0[0]]:
        raise AudioclError(f"{source}: {name} shapes {w0}, {w2} do not fit a Linear-ReLU-Linear on {in_dim} inputs")
    return w0[0]


def _audio_target(key: str) -> str:
    k = key.removeprefix("audio_branch.")
    for a, b in _AUDIO_RENAMES:
        k = k.replace(a, b)
    return AUDIO_PREFIX + k


def plan_laion(
    shapes: Mapping[str, Sequence[int]],
    *,
    text_heads: int | None = None,
    spec_size: int = 256,
    source: str = "checkpoint",
) -> ConversionPlan:
    """Infer the architecture and the key mapping from ``{key: shape}`` alone.

    Keys may carry the ``module.`` prefix. Raises :class:`AudioclError` naming
    any key that is neither mapped nor deliberately dropped.
    """
    shapes = {k.removeprefix("module."): list(v) for k, v in shapes.items()}
    htsat = _infer_htsat(shapes, spec_size, source)
    text = _infer_text(shapes, text_heads, source)
    dim = _projection(shapes, "audio_projection", htsat["output_dim"], source)
    tdim = _projection(shapes, "text_projection", text["hidden_size"], source)
    if dim != tdim:
        raise AudioclError(f"{source}: audio projection width {dim} != text projection width {tdim}")
    log_scale_max = math.log(100.0)  # LAION clamps logit_scale_a to [0, log 100]
    enc = {k: v for k, v in htsat.items() if k != "output_dim"}
    model_config = {
        "embed_dim": dim,
        "logit_scale": {"init": math.log(1 / 0.07), "max": log_scale_max, "learnable": True},
        "towers": {
            "audio": {
                "modality": "audio",
                "encoder": {"type": "htsat", **enc},
                "projection": {"type": "mlp", "hidden": dim, "activation": "relu"},
            },
            "text": {
                "modality": "text",
                "encoder": {
                    "type": "hf_text",
                    "pooling": "pooler",
                    "pretrained": False,
                    "max_length": LAION_TEXT_MAX_LENGTH,
                    "hf_config": text,
                },
                "projection": {"type": "mlp", "hidden": dim, "activation": "relu"},
            },
        },
    }
    plan = ConversionPlan(arch={"htsat": htsat, "text": text, "embed_dim": dim}, model_config=model_config)
    unknown: list[str] = []
    for k in sorted(shapes):
        reason = next((r for pat, r in _DROP_RULES if re.search(pat, k)), None)
        if reason is not None:
            plan.dropped.append((k, reason))
        elif k.startswith("audio_branch.") and any(re.search(p, k) for p in _KNOWN_AUDIO):
            dst = _audio_target(k)
            if ".attn.qkv." in k:
                for i, part in enumerate(("query", "key", "value")):
                    plan.mapped.append((k, dst.replace("attn.qkv.", f"attention.self.{part}."), f"qkv:{i}"))
            else:
                plan.mapped.append((k, dst, "copy"))
        elif k.startswith("text_branch.") and any(re.search(p, k) for p in _KNOWN_TEXT):
            plan.mapped.append((k, TEXT_PREFIX + k.removeprefix("text_branch."), "copy"))
        elif (m := re.match(r"^(audio|text)_projection\.([02])\.(weight|bias)$", k)):
            lin = "linear1" if m.group(2) == "0" else "linear2"
            plan.mapped.append((k, f"towers.{m.group(1)}.projection.net.{lin}.{m.group(3)}", "copy"))
        elif k == "logit_scale_a":
            plan.mapped.append((k, "logit_scale", "copy"))
        else:
            unknown.append(k)
    if unknown:
        raise AudioclError(f"{source}: {len(unknown)} keys neither mapped nor known to drop: {unknown[:8]}")
    if "logit_scale_a" not in shapes:
        raise AudioclError(f"{source}: missing 'logit_scale_a'")
    return plan


def apply_plan(state: Mapping[str, Any], plan: ConversionPlan) -> dict[str, Any]:
    """The audiocl state dict for ``plan`` from LAION tensors (keys with or without ``module.``)."""
    sd = {k.removeprefix("module."): v for k, v in state.items()}
    out: dict[str, Any] = {}
    for src, dst, op in plan.mapped:
        v = sd[src]
        if op.startswith("qkv:"):
            i = int(op.split(":")[1])
            if v.shape[0] % 3:
                raise AudioclError(f"{src}: fused qkv with {v.shape[0]} rows is not divisible by 3")
            v = v.chunk(3, dim=0)[i]
        out[dst] = v.detach().clone().contiguous()
    return out


def laion_to_model(
    state: Mapping[str, Any],
    *,
    text_heads: int | None = None,
    spec_size: int = 256,
    tokenizer: str | os.PathLike | None = None,
    source: str = "checkpoint",
) -> tuple[Any, ConversionPlan]:
    """Build the audiocl :class:`~audiocl.models.MultiTowerModel` holding a LAION state dict."""
    import torch

    from audiocl.audio.frontend import get_preset
    from audiocl.models import MultiTowerModel

    state = {k.removeprefix("module."): v for k, v in state.items()}
    plan = plan_laion({k: tuple(v.shape) for k, v in state.items()}, text_heads=text_heads,
                      spec_size=spec_size, source=source)
    cfg = json.loads(json.dumps(plan.model_config))
    scale = float(state["logit_scale_a"])
    if not math.isfinite(scale):
        raise AudioclError(f"{source}: logit_scale_a is not finite ({scale})")
    cfg["logit_scale"]["init"] = scale
    cfg["logit_scale"]["max"] = max(cfg["logit_scale"]["max"], scale)
    if tokenizer is not None:
        tok = Path(tokenizer)
        if not tok.is_dir():
            raise AudioclError(f"{tok}: tokenizer folder not found")
        cfg["towers"]["text"]["encoder"]["tokenizer_path"] = str(tok.resolve())
    # fusion checkpoints were trained on HTK mels (torchaudio-style), the others on Slaney ones
    preset = "laion_clap_fusion" if plan.arch["htsat"]["enable_fusion"] else "laion_clap"
    model = MultiTowerModel.from_config(cfg, frontend=get_preset(preset), prompts=LAION_PROMPTS)
    if model.towers["text"].encoder.tokenizer is not None:
        n_tok = len(model.towers["text"].encoder.tokenizer)
        if n_tok > plan.arch["text"]["vocab_size"]:
            raise AudioclError(
                f"tokenizer in {tokenizer} has {n_tok} tokens but the text branch only "
                f"{plan.arch['text']['vocab_size']} embeddings"
            )
    mapped = apply_plan(state, plan)
    own = model.state_dict()
    for k, v in mapped.items():
        if k not in own:
            raise AudioclError(f"{source}: conversion target {k} does not exist in the audiocl model")
        if tuple(own[k].shape) != tuple(v.shape):
            raise AudioclError(f"{source}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    # only constant index buffers are rebuilt by the model itself
    left = [k for k in missing if not k.endswith(("relative_position_index", "position_ids", "token_type_ids"))]
    if left or unexpected:
        raise AudioclError(f"{source}: conversion incomplete: missing {left[:5]}, unexpected {list(unexpected)[:5]}")
    # the dropped index buffers must equal the ones the model recomputed
    own = model.state_dict()
    for k, _reason in plan.dropped:
        if k.endswith("relative_position_index"):
            mine = own[_audio_target(k).replace("attn.relative_position_index", "attention.self.relative_position_index")]
            if not torch.equal(state[k].to(mine.dtype), mine):
                raise AudioclError(f"{source}: {k} differs from the recomputed index (window size mismatch?)")
    model.eval()
    return model, plan


def convert_laion_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    text_heads: int | None = None,
    spec_size: int = 256,
    tokenizer: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Convert a LAION-CLAP ``.pt`` into an audiocl model folder; returns the report
    (also written as ``<out>/conversion.json``)."""
    state = read_laion_checkpoint(checkpoint)
    model, plan = laion_to_model(state, text_heads=text_heads, spec_size=spec_size,
                                 tokenizer=tokenizer, source=str(checkpoint))
    folder = model.save_pretrained(out)
    report = plan.report()
    report["checkpoint"] = str(checkpoint)
    report["out"] = str(folder)
    report["tokenizer"] = str(tokenizer) if tokenizer is not None else None
    atomic_write_text(Path(folder) / "conversion.json", json.dumps(report, indent=2) + "\n")
    return report
