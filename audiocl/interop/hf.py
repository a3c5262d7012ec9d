"""audiocl model folders <-> Hugging Face ``transformers.ClapModel`` folders.

An audiocl model converts to ``ClapModel`` when it has exactly the CLAP shape:
one ``audio`` tower with an ``htsat`` encoder, one ``text`` tower with an
``hf_text`` RoBERTa encoder pooled by its ``pooler``, both projected by an
``mlp`` (Linear(in, d) - activation - Linear(d, d), with bias) and
L2-normalised, and no logit bias. Anything else is refused with the reason.

Key layout (audiocl -> HF)::

    towers.<audio>.encoder.model.audio_encoder.*  -> audio_model.audio_encoder.*
    towers.<text>.encoder.model.*                 -> text_model.*
    towers.<t>.projection.net.linear{1,2}.*       -> <t>_projection.linear{1,2}.*
    logit_scale                                   -> logit_scale_a and logit_scale_t

HF's ``text_model.embeddings.position_ids`` / ``token_type_ids`` are constant
buffers (arange / zeros) written from a fresh ``ClapModel``. audiocl has one
temperature; HF ``ClapModel`` two: both are set to it (HF's zero-shot pipeline
reads ``logits_per_audio``, i.e. ``logit_scale_a``). Converting back keeps
``logit_scale_a`` and records ``logit_scale_t`` as dropped.

The audio front-end is written as ``preprocessor_config.json``
(``ClapFeatureExtractor``); only front-ends it can compute are accepted
(Hann window = FFT size, power dB with floor 1e-10, no top_db, ``rand_trunc``
or fusion). The tokenizer of the text tower (or one given explicitly) is saved
too, so ``transformers.pipeline("zero-shot-audio-classification", model=dir)``
works offline.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from audiocl.errors import AudioclError
from audiocl.fsutil import atomic_write_text

_ROBERTA_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
    "type_vocab_size", "layer_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id",
)


#: The tower encoder types ``audiocl convert hf`` can export, by modality.
EXPORTABLE_TOWERS = {"audio": "htsat", "text": "hf_text"}


# --------------------------------------------------------------------------- front-end
def frontend_to_feature_extractor(fe: Any) -> dict[str, Any]:
    """``ClapFeatureExtractor`` keyword arguments computing the same log-mel as ``fe``."""
    pad, trunc = fe.length_policy.split("+")
    problems = []
    if fe.window != "hann" or fe.win_length != fe.n_fft:
        problems.append("needs a Hann window as long as the FFT")
    if fe.power != 2.0 or fe.log != "db" or fe.amin != 1e-10 or fe.ref != 1.0:
        problems.append("needs a power spectrogram in dB with floor 1e-10 and reference 1")
    if fe.top_db is not None:
        problems.append("ClapFeatureExtractor ignores top_db")
    if (fe.norm_mean, fe.norm_std) != (0.0, 1.0):
        problems.append("ClapFeatureExtractor applies no feature normalisation (norm_mean/norm_std)")
    if not fe.center or fe.pad_mode != "reflect":
        problems.append("needs centred frames with reflect padding")
    if fe.clip_samples is None or fe.clip_samples % fe.sample_rate:
        problems.append("needs clip_samples as a whole number of seconds")
    if fe.fusion:
        if (fe.mel_scale, fe.mel_norm) != ("htk", None):
            problems.append("fusion in ClapFeatureExtractor uses HTK mels without normalisation")
    else:
        if (fe.mel_scale, fe.mel_norm) != ("slaney", "slaney"):
            problems.append("rand_trunc in ClapFeatureExtractor uses Slaney mels with Slaney normalisation")
        if trunc != "rand_trunc":
            problems.append(f"ClapFeatureExtractor crops long clips at random (rand_trunc), not {trunc!r}")
    if problems:
        raise AudioclError("the model's front-end cannot be expressed as a ClapFeatureExtractor: " + "; ".join(problems))
    return {
        "feature_size": fe.n_mels,
        "sampling_rate": fe.sample_rate,
        "hop_length": fe.hop_length,
        "max_length_s": fe.clip_samples // fe.sample_rate,
        "fft_window_size": fe.n_fft,
        "frequency_min": float(fe.f_min),
        "frequency_max": float(fe.f_max_hz),
        "top_db": None,
        "truncation": "fusion" if fe.fusion else "rand_trunc",
        "padding": pad,
    }


def feature_extractor_to_frontend(fx: Any) -> Any:
    """The :class:`~audiocl.audio.frontend.FrontendConfig` of a ``ClapFeatureExtractor``."""
    from audiocl.audio.frontend import FrontendConfig

    fusion = fx.truncation == "fusion"
    padding = fx.padding if fx.padding in ("repeatpad", "repeat", "pad") else "pad"
    return FrontendConfig(
        sample_rate=int(fx.sampling_rate),
        n_fft=int(fx.fft_window_size),
        win_length=int(fx.fft_window_size),
        hop_length=int(fx.hop_length),
        window="hann",
        n_mels=int(fx.feature_size),
        f_min=float(fx.frequency_min),
        f_max=float(fx.frequency_max),
        mel_scale="htk" if fusion else "slaney",
        mel_norm=None if fusion else "slaney",
        power=2.0,
        center=True,
        pad_mode="reflect",
        log="db",
        amin=1e-10,
        ref=1.0,
        top_db=None,
        clip_samples=int(round(fx.max_length_s * fx.sampling_rate)),
        length_policy=f"{padding}+rand_trunc",
        fusion=fusion,
    )


# --------------------------------------------------------------------------- audiocl -> HF
def _clap_towers(model: Any) -> tuple[str, str]:
    from audiocl.models.encoders.hf_text import HFTextEncoder
    from audiocl.models.encoders.htsat import HTSATEncoder

    unsupported = [
        f"'{n}' ({t.modality}, {t.cfg.encoder.type})"
        for n, t in model.towers.items()
        if EXPORTABLE_TOWERS.get(t.modality) != t.cfg.encoder.type
    ]
    if unsupported:
        raise AudioclError(
            "ClapModel export takes an audio tower of type htsat and a text tower of type hf_text "
            f"(RoBERTa); unsupported tower(s): {', '.join(unsupported)}"
        )
    audio = [n for n, t in model.towers.items() if t.modality == "audio"]
    text = [n for n, t in model.towers.items() if t.modality == "text"]
    if len(model.towers) != 2 or len(audio) != 1 or len(text) != 1:
        raise AudioclError(f"ClapModel has one audio and one text tower; this model has {model.tower_names}")
    a, t = audio[0], text[0]
    ta, tt = model.towers[a], model.towers[t]
    if not isinstance(ta.encoder, HTSATEncoder):
        raise AudioclError(f"audio tower '{a}' must use the htsat encoder for ClapModel, not {ta.cfg.encoder.type}")
    if not isinstance(tt.encoder, HFTextEncoder):
        raise AudioclError(f"text tower '{t}' must use the hf_text encoder for ClapModel, not {tt.cfg.encoder.type}")
    mt = getattr(tt.encoder.model.config, "model_type", "")
    if mt != "roberta":
        raise AudioclError(f"ClapModel's text model is RoBERTa; tower '{t}' is {mt!r}")
    if tt.encoder.params.pooling != "pooler":
        raise AudioclError(f"ClapModel pools text with the RoBERTa pooler; tower '{t}' uses {tt.encoder.params.pooling!r}")
    acts = set()
    for n in (a, t):
        pc = model.towers[n].cfg.projection
        dim = model.config.embed_dim
        if pc.type != "mlp" or not pc.bias or (pc.hidden or dim) != dim:
            raise AudioclError(
                f"tower '{n}': ClapModel projects with Linear(in, d)-act-Linear(d, d) with bias; "
                f"this tower has projection {pc.model_dump()}"
            )
        if not model.towers[n].normalize:
            raise AudioclError(f"tower '{n}' is not L2-normalised; ClapModel normalises both embeddings")
        acts.add(pc.activation)
    if len(acts) != 1:
        raise AudioclError(f"ClapModel uses one projection activation for both towers; got {sorted(acts)}")
    if model.logit_bias is not None:
        raise AudioclError("ClapModel has no logit bias; this model has one (SigLIP-style)")
    return a, t


def hf_key_map(model: Any) -> dict[str, str]:
    """``{audiocl_key: hf_key}`` for every tensor of a CLAP-shaped audiocl model."""
    a, t = _clap_towers(model)
    pa, pt = f"towers.{a}.encoder.model.audio_encoder.", f"towers.{t}.encoder.model."
    out: dict[str, str] = {}
    for k in model.state_dict():
        if k.startswith(pa):
            out[k] = "audio_model.audio_encoder." + k[len(pa):]
        elif k.startswith(pt):
            out[k] = "text_model." + k[len(pt):]
        elif k.startswith((f"towers.{a}.projection.net.", f"towers.{t}.projection.net.")):
            tower, rest = k.split(".projection.net.")
            side = "audio" if tower == f"towers.{a}" else "text"
            out[k] = f"{side}_projection.{rest}"
        elif k == "logit_scale":
            out[k] = "logit_scale_a"
        else:
            raise AudioclError(f"no ClapModel place for {k}")
    return out


def hf_config_for(model: Any) -> Any:
    """The ``transformers.ClapConfig`` of a CLAP-shaped audiocl model."""
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    a, t = _clap_towers(model)
    dim = model.config.embed_dim
    act = model.towers[a].cfg.projection.activation
    audio_cfg = model.towers[a].encoder.model.config.to_dict()
    for k in ("model_type", "transformers_version", "architectures", "dtype", "torch_dtype"):
        audio_cfg.pop(k, None)
    rc = model.towers[t].encoder.model.config
    text_cfg = {f: getattr(rc, f) for f in _ROBERTA_FIELDS}
    return ClapConfig(
        text_config=ClapTextConfig(**text_cfg, projection_dim=dim, projection_hidden_act=act),
        audio_config=ClapAudioConfig(**{**audio_cfg, "projection_dim": dim, "projection_hidden_act": act}),
        projection_dim=dim,
        projection_hidden_act=act,
        logit_scale_init_value=float(math.exp(float(model.logit_scale.detach()))),
    )


def model_to_hf(model: Any, out: str | os.PathLike, *, tokenizer: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write ``model`` as a Hugging Face CLAP folder (model, feature extractor, tokenizer).

    Returns a report; ``tokenizer`` (a local tokenizer folder) overrides the
    text tower's own tokenizer. Without any tokenizer the folder still loads
    with ``ClapModel.from_pretrained`` but the pipeline cannot tokenise.
    """
    import torch
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    a, t = _clap_towers(model)
    if model.frontend is None:
        raise AudioclError("the model has no front-end (frontend.json); ClapModel needs a feature extractor")
    fx_kwargs = frontend_to_feature_extractor(model.frontend)
    config = hf_config_for(model)
    hf = ClapModel(config).eval()
    kmap = hf_key_map(model)
    src = model.state_dict()
    sd = {kmap[k]: v.detach().clone() for k, v in src.items()}
    sd["logit_scale_t"] = sd["logit_scale_a"].clone()
    own = hf.state_dict()
    # constant buffers HF keeps persistent but RoBERTa in audiocl does not
    for k in ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids"):
        if k not in sd:
            sd[k] = own[k].clone()
    extra = sorted(set(sd) - set(own))
    if extra:
        raise AudioclError(f"keys without a ClapModel place: {extra[:5]}")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise AudioclError(f"{k}: shape {tuple(v.shape)} but ClapModel expects {tuple(own[k].shape)}")
    missing, _ = hf.load_state_dict(sd, strict=False)
    if missing:
        raise AudioclError(f"ClapModel weights left unset: {sorted(missing)[:5]}")
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        hf.save_pretrained(str(outp), safe_serialization=True)
    ClapFeatureExtractor(**fx_kwargs).save_pretrained(str(outp))
    tok = None
    if tokenizer is not None:
        tok = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    else:
        tok = getattr(model.towers[t].encoder, "tokenizer", None)
    if tok is not None:
        if len(tok) > config.text_config.vocab_size:
            raise AudioclError(
                f"tokenizer has {len(tok)} tokens, the text model {config.text_config.vocab_size} embeddings"
            )
        tok.model_max_length = int(model.towers[t].encoder.max_length)
        tok.save_pretrained(str(outp))
    atomic_write_text(outp / "audiocl_prompts.json", json.dumps(list(model.prompts), indent=2) + "\n")
    from audiocl.models.licenses import write_licenses

    # the exported weights derive from the same published ones: their licences go along
    write_licenses(outp, dict(getattr(model, "licenses", {})))
    report = {
        "direction": "audiocl->hf",
        "out": str(outp),
        "mapped": [{"from": k, "to": v} for k, v in kmap.items()],
        "added": [
            {"key": "logit_scale_t", "reason": "copy of logit_scale (audiocl has one temperature)"},
            {"key": "text_model.embeddings.position_ids", "reason": "constant arange buffer"},
            {"key": "text_model.embeddings.token_type_ids", "reason": "constant zeros buffer"},
        ],
        "feature_extractor": fx_kwargs,
        "tokenizer": tok is not None,
    }
    return report


def convert_to_hf(model_dir: str | os.PathLike, out: str | os.PathLike, *, tokenizer: str | os.PathLike | None = None) -> dict[str, Any]:
    """``audiocl convert hf``: an audiocl model folder -> a HF ClapModel folder."""
    from audiocl.models import load_model

    report = model_to_hf(load_model(model_dir), out, tokenizer=tokenizer)
    report["model"] = str(model_dir)
    return report


# --------------------------------------------------------------------------- HF -> audiocl
def hf_to_model(hf_dir: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """Build the audiocl model holding a HF ``ClapModel`` folder's weights."""
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    from audiocl.models import MultiTowerModel
    from audiocl.models.encoders.hf_text import _has_tokenizer_files

    d = Path(hf_dir)
    if not (d / "config.json").is_file():
        raise AudioclError(f"{d}: not a Hugging Face model folder (no config.json)")
    try:
        hf = ClapModel.from_pretrained(str(d), local_files_only=True).eval()
    except (OSError, ValueError, TypeError) as e:
        raise AudioclError(f"{d}: cannot load as transformers.ClapModel: {str(e).splitlines()[0]}") from None
    c = hf.config
    ac, tc = c.audio_config, c.text_config
    act = c.projection_hidden_act
    if act not in ("relu", "gelu", "tanh"):
        raise AudioclError(f"{d}: projection activation {act!r} is not one audiocl has (relu, gelu, tanh)")
    frontend = None
    if (d / "preprocessor_config.json").is_file():
        frontend = feature_extractor_to_frontend(ClapFeatureExtractor.from_pretrained(str(d), local_files_only=True))
    tok_path = None
    max_length = None
    try:
        # a folder without tokenizer files still "loads" a tokenizer in recent transformers
        # (built from the config), which the hf_text tower would then refuse: only point
        # the tower at real tokenizer files
        if not _has_tokenizer_files(d):
            raise OSError("no tokenizer files")
        tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
        tok_path = str(d.resolve())
        if 0 < int(tok.model_max_length) < 100000:
            max_length = min(int(tok.model_max_length), tc.max_position_embeddings - 2)
    except (OSError, ValueError, TypeError, KeyError):
        tok = None
    text_hf = {"model_type": "roberta", **{f: getattr(tc, f) for f in _ROBERTA_FIELDS}}
    dim = c.projection_dim
    scale = float(hf.logit_scale_a.detach())
    enc_text: dict[str, Any] = {"type": "hf_text", "pooling": "pooler", "pretrained": False, "hf_config": text_hf}
    if tok_path is not None:
        enc_text["tokenizer_path"] = tok_path
    if max_length is not None:
        enc_text["max_length"] = max_length
    cfg = {
        "embed_dim": dim,
        "logit_scale": {"init": scale, "max": max(math.log(100.0), scale), "learnable": True},
        "towers": {
            "audio": {
                "modality": "audio",
                "encoder": {
                    "type": "htsat",
                    "embed_dim": ac.patch_embeds_hidden_size,
                    "depths": list(ac.depths),
                    "num_heads": list(ac.num_attention_heads),
                    "window_size": ac.window_size,
                    "spec_size": ac.spec_size,
                    "patch_size": ac.patch_size,
                    "patch_stride": list(ac.patch_stride) if not isinstance(ac.patch_stride, int) else [ac.patch_stride] * 2,
                    "n_mels": ac.num_mel_bins,
                    "mlp_ratio": ac.mlp_ratio,
                    "enable_fusion": ac.enable_fusion,
                    "fusion_type": ac.fusion_type if ac.enable_fusion else None,
                },
                "projection": {"type": "mlp", "hidden": dim, "activation": act},
            },
            "text": {"modality": "text", "encoder": enc_text, "projection": {"type": "mlp", "hidden": dim, "activation": act}},
        },
    }
    prompts = None
    if (d / "audiocl_prompts.json").is_file():
        prompts = json.loads((d / "audiocl_prompts.json").read_text())
    model = MultiTowerModel.from_config(cfg, frontend=frontend, prompts=prompts)
    kmap = {v: k for k, v in hf_key_map(model).items()}
    hsd = hf.state_dict()
    sd, dropped = {}, []
    for k, v in hsd.items():
        if k in kmap:
            sd[kmap[k]] = v.detach().clone()
        elif k == "logit_scale_t":
            dropped.append({"key": k, "reason": "audiocl keeps one temperature (logit_scale = logit_scale_a)"})
        elif k in ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids"):
            dropped.append({"key": k, "reason": "constant buffer, recomputed"})
        else:
            raise AudioclError(f"{d}: ClapModel key {k} has no audiocl place")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise AudioclError(f"{d}: conversion incomplete: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    model.eval()
    report = {
        "direction": "hf->audiocl",
        "source": str(d),
        "mapped": [{"from": k, "to": kmap[k]} for k in hsd if k in kmap],
        "dropped": dropped,
        "logit_scale_t_differs": bool(abs(float(hf.logit_scale_t.detach()) - scale) > 0),
        "tokenizer": tok_path is not None,
        "frontend": frontend.to_dict() if frontend is not None else None,
    }
    return model, report


def convert_from_hf(hf_dir: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """``audiocl convert from-hf``: a HF ClapModel folder -> an audiocl model folder."""
    model, report = hf_to_model(hf_dir)
    folder = model.save_pretrained(out)
    report["out"] = str(folder)
    atomic_write_text(Path(folder) / "conversion.json", json.dumps(report, indent=2) + "\n")
    return report
