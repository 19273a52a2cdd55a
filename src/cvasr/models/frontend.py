"""`frontend: wav2vec2_s3prl`: espnet2's s3prl frontend for wav2vec 2.0 upstreams, without host syncs.

Why: with XLS-R in bf16 the GPU finishes a training step faster than the CPU can issue it, and
s3prl's generic path stalls the CPU on the GPU about a thousand times a step: `S3PRLUpstream`
takes `max()` over a length tensor, element by element, once for each of the 25 hidden states,
the wav2vec 2.0 expert does it again for the padding mask, and the model asks `padding_mask.any()`
and zeroes padding with a boolean index. A profile of one epoch on an H200 counted 15,496
`.item()` calls and the GPU busy 45% of the time (bench/NOTES.md).

This frontend reads the lengths to the host once and computes every mask from them on the host
side of the shapes, then runs the model's own modules in the order s3prl's
`Wav2Vec2Model.forward(features_only=True)` and `TransformerEncoder.forward` run them, asking for
the last layer only (what s3prl's hook on the encoder returns as the last hidden state), with no
hooks and no data-dependent Python branches: `conv_features` (the convolutional feature
encoder) then `contextualise` (the transformer), which `compile_upstream` compiles as one graph
(`compile_encoder`). The numbers are those of espnet2's `S3prlFrontend` with
`multilayer_feature: false`, dropout masks included (tests/test_frontend.py and the demo
loss-curve test in tests/test_training.py compare the two); the modules and state_dict keys are
the same, so checkpoints move freely between the two. Any other use (multi-layer features, a
selected layer, layer drop, conformer or non-wav2vec 2.0 upstreams) falls back to espnet2's path.

`cache_conv_features: true` keeps the frozen convolutional feature encoder's output of every
training clip on the GPU, keyed by utterance id (the model passes the batch's ids in): with the
encoder frozen and no waveform augmentation a clip's conv features are the same every epoch, and
on an H200 they were about a quarter of the step's GPU time (bench/NOTES.md). Valid frames of a
clip depend only on its own samples, so cached and recomputed features agree wherever they are
not masked. It is off unless asked for, never used while the encoder is trained, and stops
growing at `cache_max_gb`. Waveform augmentation that keeps utterance ids (espnet2's rir_scp or
noise_scp) must not be combined with it; speed perturbation makes new ids and is fine.

`pos_conv_impl: fft` runs the transformer's positional convolution through FFTs
(cvasr.speedups.fft_pos_conv) instead of cuDNN's grouped convolution: the same numbers up to
float32 rounding (the convolution by cuDNN rounds its inputs to bf16 under autocast), as one
opaque operator in a compiled graph. Off unless asked for (`cudnn`).

`upstream_dropouts` sets the fine-tuning dropouts on the loaded upstream, by the names of
s3prl's (fairseq's) `Wav2Vec2Config`: a checkpoint carries the dropouts of its pre-training,
while a fine-tuning recipe chooses its own (the seed, through transformers, fine-tuned XLS-R
with `hidden_dropout`, `attention_dropout`, `feat_proj_dropout` and `layerdrop` at 0.0:
`dropout`, `attention_dropout`, `dropout_input` and `encoder_layerdrop` here). Names not given
keep the checkpoint's value; the model's `cfg` records what was set.
"""

from __future__ import annotations

import contextlib
import math
from typing import Tuple

import torch
import torch.nn.functional as F
from espnet2.asr.frontend.s3prl import S3prlFrontend

from cvasr.models import inline_upstream
from cvasr.speedups import fft_pos_conv

#: s3prl.nn.upstream pads batches shorter than this many samples (MIN_SECOND x 16 kHz).
MIN_SAMPLES = 800
#: wav2vec 2.0's feature encoder turns 320 samples into one frame.
STRIDE = 320
#: the compiled transformer gets its frames padded to a multiple of this (inductor's alignment)
ALIGN_FRAMES = 8
#: the positional convolution gets its frames padded to a multiple of this: cuDNN's autotuning
#: (cudnn_benchmark) then tunes one shape for every 32 batch lengths instead of each length
#: (1.4-3.4 s a shape on an H200, bench/results/step_kernels_a4ffc8b; a 10-hour corpus has
#: hundreds of batch lengths); the padding (16 frames on average) costs about 6% of the
#: convolution's time at 250 frames, 0.1 ms of a step
POS_CONV_FRAMES = 32
#: how the transformer's positional convolution runs (`pos_conv_impl`)
POS_CONV_IMPLS = ("cudnn", "fft")
#: the dropouts `upstream_dropouts` can set: s3prl's (fairseq's) Wav2Vec2Config names
UPSTREAM_DROPOUTS = ("dropout", "attention_dropout", "activation_dropout", "dropout_input",
                     "encoder_layerdrop")


def set_layer_dropouts(layer: torch.nn.Module, dropout: float | None = None,
                       attention_dropout: float | None = None,
                       activation_dropout: float | None = None) -> None:
    """Set one s3prl transformer layer's dropouts in place (None: left as they are): `dropout`
    after attention and after the FFN, `attention_dropout` on the attention probabilities,
    `activation_dropout` inside the FFN, after its activation."""
    if dropout is not None:
        layer.dropout = layer.dropout1.p = layer.dropout3.p = float(dropout)
    if attention_dropout is not None:
        layer.self_attn.dropout_module.p = float(attention_dropout)
    if activation_dropout is not None:
        layer.activation_dropout = layer.dropout2.p = float(activation_dropout)


def set_upstream_dropouts(model: torch.nn.Module, dropouts: dict[str, float]) -> None:
    """Set an s3prl wav2vec 2.0 model's dropouts (UPSTREAM_DROPOUTS names) in place, on every
    module that reads them, and in `model.cfg`."""
    unknown = sorted(set(dropouts) - set(UPSTREAM_DROPOUTS))
    if unknown:
        raise ValueError(f"frontend_conf upstream_dropouts: {', '.join(unknown)} not among "
                         f"{', '.join(UPSTREAM_DROPOUTS)}")
    for name, p in dropouts.items():
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"frontend_conf upstream_dropouts: {name} = {p} is not in [0, 1)")
    encoder = model.encoder
    if "dropout" in dropouts:  # after the positional conv (and in every layer, below)
        encoder.dropout = float(dropouts["dropout"])
    for layer in encoder.layers:
        set_layer_dropouts(layer, dropouts.get("dropout"), dropouts.get("attention_dropout"),
                           dropouts.get("activation_dropout"))
    if "dropout_input" in dropouts:  # after the feature projection
        model.dropout_input.p = float(dropouts["dropout_input"])
    if "encoder_layerdrop" in dropouts:
        encoder.layerdrop = float(dropouts["encoder_layerdrop"])
    cfg = getattr(model, "cfg", None)
    for name, p in dropouts.items():
        if cfg is not None and hasattr(cfg, name):
            setattr(cfg, name, float(p))


def inductor_options(options: dict | None) -> dict:
    """Inductor config entries (`--compile_options`) as torch.compile's `options` take them:
    dotted keys (`triton.mix_order_reduction_split_size`), from a flat or a nested mapping (the
    command line's `--compile_options triton.enable_pdl=true` nests at the dots). Each key is
    checked against this torch's inductor config here, so a misspelt one is refused at the start
    of training, named, and not at the first batch's compile."""
    from torch._inductor import config

    flat: dict = {}

    def walk(prefix: str, mapping: dict) -> None:
        for key, value in mapping.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(name + ".", value)
            else:
                flat[name] = value
    walk("", dict(options or {}))
    known = config.get_config_copy()
    unknown = sorted(k for k in flat if k not in known)
    if unknown:
        raise ValueError(f"compile_options: {', '.join(unknown)} not in torch {torch.__version__}'s "
                         "inductor config (torch._inductor.config)")
    return flat


def compile_args(mode: str | None, cpp_wrapper: bool = False,
                 options: dict | None = None) -> dict:
    """torch.compile's `mode` / `options` for `mode`, with inductor's C++ wrapper if asked and
    inductor config entries (`options`, inductor_options' keys) over the mode's own.

    Why the C++ wrapper: in the compiled training step the CPU spends about 20 ms a step in the
    Python code inductor generates to launch the graph's kernels, and with espnet2's loop around
    it the CPU is busy about as long as the GPU's 62.5 ms of kernels (bench/NOTES.md, round 11).
    A wrapper in C++ launches the same kernels for less CPU time, and needs no recording per
    batch shape as CUDA graphs do. torch.compile takes a mode or options, not both: a mode
    becomes its options."""
    if not cpp_wrapper and not options:
        return {"mode": mode}
    from torch._inductor import list_mode_options

    merged = {**list_mode_options(mode or "default"), **inductor_options(options)}
    if cpp_wrapper:
        merged["cpp_wrapper"] = True
    return {"options": merged}


def to_device_async(values: list[int] | torch.Tensor,
                    device: torch.device) -> torch.Tensor:
    """A host list or tensor as a tensor on `device` (a tensor already there as it is); to a GPU
    from pinned memory, so the CPU does not wait (`torch.tensor(values, device=...)` blocks
    until the GPU's queue is empty)."""
    host = torch.as_tensor(values)
    if host.device == device or device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def positional_conv_padding(frames: int) -> int:
    """Frames the positional convolution's input gets added: 1 to POS_CONV_FRAMES, to a multiple
    of it (_positional_conv says why never none)."""
    return POS_CONV_FRAMES - frames % POS_CONV_FRAMES


def _positional_conv(pos_conv: torch.nn.Module, x: torch.Tensor,
                     impl: str = "cudnn") -> torch.Tensor:
    """wav2vec 2.0's positional convolution over x (B, T, C), the frames zero-padded to a multiple
    of POS_CONV_FRAMES and cut back: the same numbers, as one convolution (wav2vec 2.0's, not
    data2vec's stack with layer norms between) sees zeros past T either way, from its own
    padding or from ours. No branch on the length: a compiled graph stays one graph. The pad is
    1 to POS_CONV_FRAMES frames, never none: a pad that may be zero made the compiled graph
    specialise on whether T is a multiple already, one more compile for each batch size (about
    a minute each on a fresh H200, bench/results/step_cudagraphs_406d0cf). `impl` "fft": through
    cvasr.speedups.fft_pos_conv instead."""
    conv = pos_conv[0] if isinstance(pos_conv, torch.nn.Sequential) else None
    if not (isinstance(conv, torch.nn.Conv1d) and len(pos_conv) == 3
            and isinstance(pos_conv[2], torch.nn.GELU)):
        return pos_conv(x.transpose(1, 2)).transpose(1, 2)
    if impl == "fft" and fft_pos_conv.supports(conv):
        return fft_pos_conv.fft_positional_conv(pos_conv, x)  # no padding: no autotuning
    frames = x.size(1)
    padded = F.pad(x, (0, 0, 0, positional_conv_padding(frames))).transpose(1, 2)
    if torch.compiler.is_compiling():  # the weight norm as ops inductor compiles, backward too
        # (fft_pos_conv.conv_weight says why); eager keeps the module's own hook and numbers
        y = F.conv1d(padded, fft_pos_conv.conv_weight(conv), conv.bias, conv.stride,
                     conv.padding, conv.dilation, conv.groups)
        y = pos_conv[2](pos_conv[1](y))
    else:
        y = pos_conv(padded)
    return y[:, :, :frames].transpose(1, 2)


def _cudnn_without_autotuning():
    """torch.backends.cudnn's flags as they are, autotuning (benchmark) off."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=False,
                       benchmark_limit=cudnn.benchmark_limit,
                       deterministic=cudnn.deterministic, allow_tf32=cudnn.allow_tf32)


def repeat_last_valid_frame(feats: torch.Tensor, frames: list[int]) -> torch.Tensor:
    """Each clip's frames past its encoder frames (`frames`) as copies of its last one.

    Why: s3prl gives a clip of N samples ceil(N / 320) frames, one or two more than the
    convolutional encoder makes; alone, a clip gets copies of its last frame there, but in a
    padded batch those frames are the transformer's output at padding positions, unrelated to
    the clip, and a decoder reads them as the clip's last frames (a stray token at the end of a
    transcript). With `batch_as_alone` (the decoder sets it) every clip then gets in evaluation
    what it gets alone, so batching changes no hypothesis; training and espnet2's validation
    keep the numbers of espnet2's own frontend.
    """
    total = feats.size(1)
    last = torch.tensor([min(n, total) - 1 for n in frames], device=feats.device)
    index = torch.minimum(torch.arange(total, device=feats.device)[None, :], last[:, None])
    return feats.gather(1, index[..., None].expand(-1, -1, feats.size(2)))


def _layer_forward(layer: torch.nn.Module, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """One s3prl transformer layer (T, B, D) -> (T, B, D), its attention weights not computed."""
    return layer.forward(x, self_attn_padding_mask=padding, need_weights=False)[0]


#: the same inside torch.compile's hierarchical compilation: the layer's code is generated once
#: and reused by all 24 layers of the one graph (eager: a plain call)
_shared_layer_forward = torch.compiler.nested_compile_region(_layer_forward)


class Wav2Vec2S3prlFrontend(S3prlFrontend):
    """S3prlFrontend whose last-layer path for s3prl's wav2vec 2.0 experts needs one host sync."""

    def __init__(self, *args, cache_conv_features: bool = False, cache_max_gb: float = 4.0,
                 pos_conv_impl: str = "cudnn", upstream_dropouts: dict | None = None,
                 **kwargs) -> None:
        if pos_conv_impl not in POS_CONV_IMPLS:
            raise ValueError(f"frontend_conf pos_conv_impl: {pos_conv_impl!r} is not one of "
                             f"{', '.join(POS_CONV_IMPLS)}")
        inline_upstream.register()  # `upstream: wav2vec2_inline`: the shape in the config itself
        super().__init__(*args, **kwargs)
        if upstream_dropouts:
            model = getattr(self.upstream.upstream, "model", None)
            if type(getattr(model, "encoder", None)).__name__ != "TransformerEncoder":
                raise ValueError("frontend_conf upstream_dropouts: the upstream is not an s3prl "
                                 "wav2vec 2.0 model")
            set_upstream_dropouts(model, dict(upstream_dropouts))
        self._compiled_contextualise = None  # set by compile_encoder()
        self._shared_layers = False  # compile_encoder(shared_layers=True)
        self.cache_conv_features = cache_conv_features
        self.cache_max_bytes = int(cache_max_gb * 2**30)
        self.pos_conv_impl = pos_conv_impl
        self._cache: dict[str, torch.Tensor] = {}
        self._cache_bytes = 0
        #: the batch's utterance ids, set by the model around each forward (CTCWerASRModel)
        self.utt_ids: list[str] | None = None
        #: in evaluation, give each clip of a batch the frames it gets alone (see
        #: repeat_last_valid_frame); decoding sets it
        self.batch_as_alone = False

    def _cacheable(self) -> bool:
        """Conv features can be reused: asked for, ids given, encoder frozen and without dropout."""
        if not (self.cache_conv_features and self.utt_ids is not None):
            return False
        model = self.upstream.upstream.model
        encoder = model.feature_extractor
        return (not any(p.requires_grad for p in encoder.parameters())
                and not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in encoder.modules()))

    def _fast_path(self) -> bool:
        expert = self.upstream.upstream
        if not (not self.multilayer_feature and self.layer == -1 and self.tile_factor == 1
                and not self.upstream.normalize
                and type(expert).__module__.startswith("s3prl.upstream.wav2vec2")
                and getattr(expert, "feature_selection", "x") is None
                and getattr(expert, "apply_padding_mask", False)
                and not getattr(expert, "numpy_wav_normalize", True)):
            return False
        model = getattr(expert, "model", None)
        encoder = getattr(model, "encoder", None)
        return (type(encoder).__name__ == "TransformerEncoder"
                and getattr(encoder, "layerdrop", 1.0) == 0.0
                and hasattr(model, "cfg"))

    def compile_encoder(self, mode: str | None = "default", backend: str = "inductor",
                        fullgraph: bool = False, shared_layers: bool = False,
                        cpp_wrapper: bool = False, options: dict | None = None) -> bool:
        """torch.compile the transformer (`contextualise`) as one graph with dynamic shapes
        (`mode`, inductor's C++ wrapper with `cpp_wrapper` and inductor config entries
        `options`: compile_args).

        `shared_layers`: the layers as one nested compile region, generated once for all of them
        (hierarchical compilation), which cuts the compile time a fresh run pays. The graph is
        used for training only: without gradients (validation) the eager transformer runs, which
        would otherwise cost a compile of its own. The convolutional feature encoder before it
        stays eager: with symbolic lengths, inductor (torch 2.11) fails on its stride order
        ("cannot determine truth value of Relational"). False where the fast path is not taken
        and nothing was compiled.
        """
        if not self._fast_path():
            return False
        self._shared_layers = shared_layers
        self._compiled_contextualise = torch.compile(self.contextualise, backend=backend,
                                                     fullgraph=fullgraph,
                                                     **compile_args(mode, cpp_wrapper, options))
        return True

    def encode(self, wavs: torch.Tensor, sample_lens: torch.Tensor,
               frame_lens: torch.Tensor, frames: list[int] | None = None) -> torch.Tensor:
        """Padded waveforms, their lengths in samples and in frames -> last hidden state.

        Padding masks are always built, also where nothing is padded (s3prl skips them then; an
        all-false mask changes no number). `frames` (frame_lens on the host) enables the cache.
        """
        if frames is not None and self._cacheable():
            features = self.cached_conv_features(wavs, sample_lens, frames)
        else:
            features = self.conv_features(wavs, sample_lens)
        if self._compiled_contextualise is None or not torch.is_grad_enabled():
            return self.contextualise(features, frame_lens)
        # compiled: one graph for all lengths, one per batch size (few: batches are sorted;
        # inductor in torch 2.11 fails on a symbolic batch size, as on a symbolic sample count).
        # The graph specialises on what the length is a multiple of: on 2 (s3prl pads to it
        # inside) and on 8 (inductor's alignment checks), a compile each way. So the frames are
        # padded here to a multiple of 8: every batch takes the same branches. The frames added
        # are zero, beyond every clip's length: masked as padding, as s3prl's are.
        length = features.size(2)
        multiple = math.lcm(self.upstream.upstream.model.encoder.required_seq_len_multiple,
                            ALIGN_FRAMES)
        pad = -length % multiple
        if pad:  # padded as (B, T, C), the layout the conv encoder and the cache leave
            features = F.pad(features.transpose(1, 2), (0, 0, 0, pad)).transpose(1, 2)
        torch._dynamo.maybe_mark_dynamic(features, 2)
        torch._dynamo.mark_static(features, 0)
        torch._dynamo.mark_static(frame_lens, 0)
        return self._compiled_contextualise(features, frame_lens)[:, :length]

    def conv_features(self, wavs: torch.Tensor, sample_lens: torch.Tensor) -> torch.Tensor:
        """The (normalised) waveforms through the convolutional feature encoder: (B, C, T)."""
        expert = self.upstream.upstream
        model = expert.model
        valid = torch.arange(wavs.size(1), device=wavs.device)[None, :] < sample_lens[:, None]
        wavs = wavs.float() * valid
        if expert.wav_normalize:  # F.layer_norm over each clip's own samples, as a batch
            count = sample_lens[:, None].to(wavs.dtype)
            mean = wavs.sum(1, keepdim=True) / count
            var = ((wavs - mean) * valid).pow(2).sum(1, keepdim=True) / count
            wavs = (wavs - mean) * torch.rsqrt(var + 1e-5) * valid
        # Wav2Vec2Model.forward(features_only=True, mask=False), up to the feature encoder
        if model.feature_grad_mult > 0:
            features = model.feature_extractor(wavs)
            if model.feature_grad_mult != 1.0:
                from s3prl.upstream.wav2vec2.wav2vec2_model import GradMultiply

                features = GradMultiply.apply(features, model.feature_grad_mult)
        else:
            with torch.no_grad():
                features = model.feature_extractor(wavs)
        return features

    def cached_conv_features(self, wavs: torch.Tensor, sample_lens: torch.Tensor,
                             frames: list[int]) -> torch.Tensor:
        """conv_features, read from the cache where every clip of the batch is in it."""
        ids = self.utt_ids
        if len(ids) != len(frames):
            raise ValueError(f"{len(ids)} utterance ids for a batch of {len(frames)} clips")
        hits = [self._cache.get(u) for u in ids]
        if all(h is not None and h.size(1) == n for h, n in zip(hits, frames)):
            total = max(frames)
            # (B, C, T) laid out as (B, T, C), as the encoder's last transpose leaves it: the
            # transformer's transpose is then free, and a compiled graph sees one layout
            out = hits[0].new_zeros(len(ids), total, hits[0].size(0)).transpose(1, 2)
            for b, h in enumerate(hits):  # padding frames stay zero: they are masked later
                out[b, :, : h.size(1)] = h
            return out
        # filling the cache: this batch's shape is not seen by the encoder again, so cuDNN's
        # autotuning (cudnn_benchmark) would tune it for nothing (about 1 s a new shape on an
        # H200; a 10-hour corpus has hundreds of batch lengths: bench/NOTES.md, round 4)
        filling = self._cache_bytes < self.cache_max_bytes
        with _cudnn_without_autotuning() if filling else contextlib.nullcontext():
            features = self.conv_features(wavs, sample_lens)
        for b, (u, n) in enumerate(zip(ids, frames)):
            if self._cache_bytes >= self.cache_max_bytes:
                break
            if u not in self._cache:
                clip = features[b, :, :n].detach().clone()
                self._cache[u] = clip
                self._cache_bytes += clip.numel() * clip.element_size()
        return features

    def contextualise(self, features: torch.Tensor, frame_lens: torch.Tensor) -> torch.Tensor:
        """Feature encoder output (B, C, T) -> the transformer's last hidden state (B, T', D).

        No host syncs and no data-dependent branches: every shape follows from the inputs', so
        one compiled graph (compile_encoder) serves every batch.
        """
        model = self.upstream.upstream.model
        encoder = model.encoder
        x = model.layer_norm(features.transpose(1, 2))
        crop = x.size(1) % model.crop_seq_to_multiple
        if crop:
            x = x[:, :-crop]
        padding = torch.arange(x.size(1), device=x.device)[None, :] >= frame_lens[:, None]
        if model.post_extract_proj is not None:
            x = model.post_extract_proj(x)
        x = model.dropout_input(x)
        # TransformerEncoder.forward -> extract_features, all layers
        x = x.masked_fill(padding[..., None], 0)
        if encoder.pos_conv is not None:
            x = x + _positional_conv(encoder.pos_conv, x, self.pos_conv_impl)
        if not encoder.layer_norm_first:
            x = encoder.layer_norm(x)
        # s3prl pads the length to a multiple of required_seq_len_multiple, masks the pad frames
        # out of attention and cuts them off after the last layer; kept, although no valid
        # frame's number depends on it, because dropout draws its masks over the padded length
        pad_length = -x.size(1) % encoder.required_seq_len_multiple
        if pad_length:
            x = F.pad(x, (0, 0, 0, pad_length))
            padding = F.pad(padding, (0, pad_length), value=True)
        x = F.dropout(x, p=encoder.dropout, training=encoder.training)
        x = x.transpose(0, 1)
        run_layer = _shared_layer_forward if self._shared_layers else _layer_forward
        for layer in encoder.layers:  # .forward: the hooks s3prl hangs on each layer stay out
            x = run_layer(layer, x, padding)
        x = x.transpose(0, 1)
        if pad_length:
            x = x[:, :-pad_length]
        if encoder.layer_norm_first:
            x = encoder.layer_norm(x)
        return x

    def forward(self, input: torch.Tensor,
                input_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self._fast_path():
            return super().forward(input, input_lengths.to(input.device))
        if input.dim() == 3:
            input = input.squeeze(-1)
        lengths = input_lengths.tolist()  # the one host sync (none for lengths on the host)
        longest = max(lengths)
        padded_lengths = list(lengths)
        if longest < MIN_SAMPLES:  # as S3PRLUpstream does: every clip grows by the same amount
            padded_lengths = [n + MIN_SAMPLES - longest for n in lengths]
            longest = MIN_SAMPLES
        wavs = input[:, :longest]
        if wavs.size(1) < longest:
            wavs = F.pad(wavs, (0, longest - wavs.size(1)))
        # s3prl's own conv length formula, on the host: the lengths are already here
        frames = self.upstream.upstream.model._get_feat_extract_output_lengths(
            torch.tensor(padded_lengths)).tolist()
        # s3prl marks the last valid frame at index length - 1: a clip too short for one frame
        # (length 0) wraps to the last frame and so keeps every frame unmasked
        frames = [n if n > 0 else max(frames) for n in frames]
        sample_lens = to_device_async(padded_lengths, input.device)
        frame_lens = to_device_async(frames, input.device)
        feats = self.encode(wavs, sample_lens, frame_lens, frames)
        expected = -(-longest // STRIDE)  # len(range(0, longest, STRIDE)), as S3PRLUpstream
        feats = self.upstream._match_length(feats, expected)
        feats_lens = torch.div(input_lengths - 1, STRIDE, rounding_mode="floor") + 1
        feats = feats[:, : (max(lengths) - 1) // STRIDE + 1]
        if self.batch_as_alone and not self.training and len(frames) > 1:
            feats = repeat_last_valid_frame(feats, frames)
        return feats, feats_lens
