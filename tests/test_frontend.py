"""The sync-free wav2vec 2.0 frontend computes what espnet2's S3prlFrontend computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from espnet2.asr.frontend.s3prl import S3prlFrontend

from cvasr.models.frontend import Wav2Vec2S3prlFrontend, compile_args, inductor_options


def _pair(upstream: Path, **options) -> tuple[S3prlFrontend, Wav2Vec2S3prlFrontend]:
    conf = {"upstream": "wav2vec2_custom", "path_or_url": str(upstream)}
    ref = S3prlFrontend(fs="16k", frontend_conf=conf, multilayer_feature=False)
    ours = Wav2Vec2S3prlFrontend(fs="16k", frontend_conf=conf, multilayer_feature=False,
                                 **options)
    ours.load_state_dict(ref.state_dict())
    return ref.eval(), ours.eval()


@pytest.mark.parametrize("lengths", [[16000, 12345, 9000], [4000], [700, 500], [321, 320, 960]])
def test_same_features_and_lengths_as_espnet2(tiny_upstream: Path, lengths: list[int]) -> None:
    ref, ours = _pair(tiny_upstream)
    assert ours._fast_path()
    gen = torch.Generator().manual_seed(sum(lengths))
    batch = torch.zeros(len(lengths), max(lengths) + 37)  # extra padding beyond the longest clip
    for b, n in enumerate(lengths):
        batch[b, :n] = torch.randn(n, generator=gen) * 3000
    lens = torch.tensor(lengths)
    with torch.no_grad():
        want, want_lens = ref(batch, lens)
        got, got_lens = ours(batch, lens)
    assert got.shape == want.shape
    assert torch.equal(got_lens, want_lens)
    for b, n in enumerate(want_lens.tolist()):  # valid frames agree; padding frames are masked
        torch.testing.assert_close(got[b, :n], want[b, :n], rtol=1e-4, atol=1e-4)
    assert not ours.upstream.upstream._hook_hiddens  # nothing left behind between calls


def test_same_gradients_as_espnet2(tiny_upstream: Path) -> None:
    ref, ours = _pair(tiny_upstream)
    batch = torch.randn(2, 8000) * 3000
    lens = torch.tensor([8000, 6000])
    grads = []
    for frontend in (ref, ours):
        frontend.zero_grad()
        feats, feats_lens = frontend(batch, lens)
        mask = torch.arange(feats.size(1))[None, :] < feats_lens[:, None]
        (feats.pow(2).sum(-1) * mask).sum().backward()
        grads.append(frontend.upstream.upstream.model.encoder.layers[0].fc1.weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-3)


def test_fft_positional_conv_gives_espnet2s_features_and_gradients(tiny_upstream: Path) -> None:
    """`pos_conv_impl: fft` changes how the positional convolution runs, not what it gives."""
    ref, ours = _pair(tiny_upstream, pos_conv_impl="fft")
    batch = torch.randn(3, 16000) * 3000
    lens = torch.tensor([16000, 12345, 9000])
    grads = []
    for frontend in (ref, ours):
        feats, feats_lens = frontend(batch, lens)
        mask = torch.arange(feats.size(1))[None, :] < feats_lens[:, None]
        (feats.pow(2).sum(-1) * mask).sum().backward()
        conv = frontend.upstream.upstream.model.encoder.pos_conv[0]
        grads.append([conv.weight_v.grad.clone(), conv.bias.grad.clone()])
        if frontend is ref:
            want, want_lens = feats.detach(), feats_lens
    assert torch.equal(feats_lens, want_lens)
    for b, n in enumerate(want_lens.tolist()):
        torch.testing.assert_close(feats[b, :n].detach(), want[b, :n], rtol=1e-4, atol=1e-4)
    for got, expected in zip(grads[1], grads[0]):  # the conv's own parameters get gradients
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="pos_conv_impl: 'winograd'"):
        _pair(tiny_upstream, pos_conv_impl="winograd")


def test_other_uses_fall_back_to_espnet2(tiny_upstream: Path) -> None:
    conf = {"upstream": "wav2vec2_custom", "path_or_url": str(tiny_upstream)}
    assert not Wav2Vec2S3prlFrontend(fs="16k", frontend_conf=conf,
                                     multilayer_feature=True)._fast_path()
    assert not Wav2Vec2S3prlFrontend(fs="16k", frontend_conf={"upstream": "mel"})._fast_path()


def test_cached_conv_features_are_the_computed_ones(tiny_upstream: Path) -> None:
    ref, ours = _pair(tiny_upstream)
    ours.cache_conv_features = True
    for p in ours.upstream.upstream.model.feature_extractor.parameters():
        p.requires_grad = False  # frozen, as the recipe's freeze_param makes it
    lengths = [16000, 12345, 9000]
    gen = torch.Generator().manual_seed(7)
    batch = torch.zeros(3, 16000)
    for b, n in enumerate(lengths):
        batch[b, :n] = torch.randn(n, generator=gen) * 3000
    lens = torch.tensor(lengths)
    with torch.no_grad():
        want, want_lens = ref(batch, lens)
        ours.utt_ids = ["a", "b", "c"]
        first, _ = ours(batch, lens)  # computes and fills the cache
        assert sorted(ours._cache) == ["a", "b", "c"]
        # the cache is what is read now: a changed feature encoder does not change the output
        for p in ours.upstream.upstream.model.feature_extractor.parameters():
            p.zero_()
        second, _ = ours(batch, lens)
        ours.utt_ids = None  # without ids (decoding), nothing is cached: the zeroed encoder shows
        third, _ = ours(batch, lens)
    for b, n in enumerate(want_lens.tolist()):
        torch.testing.assert_close(first[b, :n], want[b, :n], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(second[b, :n], want[b, :n], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(third, second, atol=1e-2)


def test_conv_features_are_not_cached_while_the_encoder_trains(tiny_upstream: Path) -> None:
    _, ours = _pair(tiny_upstream)
    ours.cache_conv_features = True
    ours.utt_ids = ["a"]
    ours(torch.randn(1, 4000) * 3000, torch.tensor([4000]))
    assert not ours._cache  # feature encoder parameters still require grad


@pytest.mark.parametrize("shared_layers", [False, True])
def test_encoder_compiles_as_one_graph_with_the_same_numbers(tiny_upstream: Path,
                                                             shared_layers: bool) -> None:
    compile_and_compare(tiny_upstream, shared_layers)


def compile_and_compare(tiny_upstream: Path, shared_layers: bool) -> int:
    """Compiled (as one graph) and espnet2's frontend give the same numbers; the calls the
    graph captured."""
    # aot_eager: dynamo's capture and AOT autograd without code generation, which is what a CPU
    # test can check (the GPU runs inductor on the same graph; bench/train_throughput.py)
    from torch._dynamo.utils import counters

    ref, ours = _pair(tiny_upstream)
    assert ours.compile_encoder(mode=None, backend="aot_eager", fullgraph=True,  # no graph break
                                shared_layers=shared_layers)
    torch._dynamo.reset()
    counters.clear()
    # 49, 50, 63 and 21 frames: an odd and an even length share the graph (frames padded to 8),
    # and so does one padded to a multiple of 32 (64), where the positional conv's own padding
    # to 32 could otherwise branch
    for lengths in ([16000, 12345, 9000], [16320, 11000, 5000], [20480, 15000, 9000],
                    [7000, 7000, 7000]):
        batch = torch.randn(len(lengths), max(lengths)) * 3000
        lens = torch.tensor(lengths)
        want, want_lens = ref(batch, lens)
        got, got_lens = ours(batch, lens)
        assert torch.equal(got_lens, want_lens)
        for b, n in enumerate(want_lens.tolist()):
            torch.testing.assert_close(got[b, :n], want[b, :n], rtol=1e-4, atol=1e-4)
        (got.sum() - want.sum()).backward()  # the compiled graph's backward runs too
    assert ours._compiled_contextualise is not None
    assert counters["stats"]["unique_graphs"] == 1
    # the layers traced once for all of them (2 here) where they are shared
    captured = counters["stats"]["calls_captured"]
    with torch.no_grad():  # validation: the eager transformer, no second graph to compile
        batch = torch.randn(2, 9000) * 3000
        torch.testing.assert_close(ours(batch, torch.tensor([9000, 8000]))[0],
                                   ref(batch, torch.tensor([9000, 8000]))[0], rtol=1e-4, atol=1e-4)
    assert counters["stats"]["unique_graphs"] == 1
    return captured


def test_compile_args_give_the_cpp_wrapper_with_the_modes_options() -> None:
    assert compile_args("default") == {"mode": "default"}
    assert compile_args("reduce-overhead") == {"mode": "reduce-overhead"}
    # torch.compile takes a mode or options: the mode's own options, and the wrapper's
    assert compile_args("default", cpp_wrapper=True) == {"options": {"cpp_wrapper": True}}
    assert compile_args("reduce-overhead", cpp_wrapper=True) == {
        "options": {"triton.cudagraphs": True, "cpp_wrapper": True}}


def test_compile_options_are_inductor_config_entries_over_the_modes() -> None:
    # the command line nests at the dots (espnet2's NestedDictAction); a YAML mapping may not
    nested = {"triton": {"mix_order_reduction_split_size": 64, "cudagraphs": False}}
    assert compile_args("reduce-overhead", options=nested) == {"options": {
        "triton.cudagraphs": False, "triton.mix_order_reduction_split_size": 64}}
    assert compile_args("default", cpp_wrapper=True, options={"triton.enable_pdl": True}) == {
        "options": {"triton.enable_pdl": True, "cpp_wrapper": True}}
    assert inductor_options(None) == {} and compile_args("default", options={}) == {
        "mode": "default"}
    with pytest.raises(ValueError, match=r"triton\.mix_order_split_size not in torch .*inductor"):
        inductor_options({"triton": {"mix_order_split_size": 64, "enable_pdl": True}})


def test_cpp_wrapper_reaches_the_encoders_compile(tiny_upstream: Path) -> None:
    """The frontend hands compile_args' options to the compiler (a backend that records them
    and runs the graph as captured), and the numbers stay espnet2's."""
    seen = []

    def recording_backend(gm, example_inputs, **kwargs):
        seen.append(kwargs)
        return gm.forward

    ref, ours = _pair(tiny_upstream)
    torch._dynamo.reset()
    assert ours.compile_encoder(mode="default", backend=recording_backend, cpp_wrapper=True)
    batch, lens = torch.randn(2, 9000) * 3000, torch.tensor([9000, 8000])
    got, _ = ours(batch, lens)
    want, want_lens = ref(batch, lens)
    assert seen and all(kwargs == {"options": {"cpp_wrapper": True}} for kwargs in seen)
    for b, n in enumerate(want_lens.tolist()):
        torch.testing.assert_close(got[b, :n], want[b, :n], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("options", [None, {"triton.mix_order_reduction_split_size": 64}])
def test_inductor_takes_the_cpp_wrapper_args(options: dict | None) -> None:
    """Inductor (CPU code here, CUDA on a GPU) compiles and runs a graph with compile_args'
    C++ wrapper (and inductor options), gradients included: the args are ones this torch
    accepts."""
    torch._dynamo.reset()
    layer = torch.nn.Linear(16, 16)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(layer(x)).sum(-1)

    with torch._inductor.config.patch(force_disable_caches=True):
        compiled = torch.compile(f, dynamic=True, **compile_args("default", cpp_wrapper=True,
                                                                  options=options))
        for frames in (7, 9):
            x = torch.randn(3, frames, 16, requires_grad=True)
            x_eager = x.detach().clone().requires_grad_(True)
            got, want = compiled(x), f(x_eager)
            got.sum().backward()
            want.sum().backward()
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(x.grad, x_eager.grad, rtol=1e-5, atol=1e-5)


def test_shared_layers_trace_each_layer_once(tiny_upstream: Path) -> None:
    calls = [compile_and_compare(tiny_upstream, shared) for shared in (False, True)]
    layers = len(_pair(tiny_upstream)[1].upstream.upstream.model.encoder.layers)
    per_layer = (calls[0] - calls[1]) // (layers - 1)  # the calls one layer's trace captures
    assert layers == 2 and per_layer > 10 and calls[0] - calls[1] == per_layer * (layers - 1)


def test_conv_feature_cache_stops_growing_at_its_limit(tiny_upstream: Path) -> None:
    _, ours = _pair(tiny_upstream)
    for p in ours.upstream.upstream.model.feature_extractor.parameters():
        p.requires_grad = False
    ours.cache_conv_features = True
    ours.cache_max_bytes = 1  # room for the first clip only: the check comes before each insert
    ours.utt_ids = ["a", "b"]
    with torch.no_grad():
        ours(torch.randn(2, 8000) * 3000, torch.tensor([8000, 6000]))
    assert list(ours._cache) == ["a"]
    assert ours._cache_bytes == ours._cache["a"].numel() * ours._cache["a"].element_size()


def test_decoding_a_batch_gives_each_clip_its_frames_alone(tiny_upstream: Path) -> None:
    """s3prl gives a clip ceil(N / 320) frames, one or two past the encoder's; in a padded batch
    those are padding outputs. With batch_as_alone (as the decoder runs it) each clip gets the
    frames it gets alone: copies of its last frame."""
    _, ours = _pair(tiny_upstream)
    lengths = [16000, 12345, 9000]
    gen = torch.Generator().manual_seed(7)
    batch = torch.zeros(len(lengths), max(lengths))
    for b, n in enumerate(lengths):
        batch[b, :n] = torch.randn(n, generator=gen) * 3000
    lens = torch.tensor(lengths)
    with torch.no_grad():
        alone = [ours(batch[b:b + 1, :n], lens[b:b + 1])[0][0] for b, n in enumerate(lengths)]
        plain, feats_lens = ours(batch, lens)
        ours.batch_as_alone = True
        fixed, fixed_lens = ours(batch, lens)
    assert torch.equal(fixed_lens, feats_lens)
    conv_frames = [(n - 400) // 320 + 1 for n in lengths]
    for b, n in enumerate(feats_lens.tolist()):
        assert alone[b].shape[0] == n
        torch.testing.assert_close(fixed[b, :n], alone[b], rtol=1e-4, atol=1e-4)
        # without it, only the encoder's frames are the clip's own
        torch.testing.assert_close(plain[b, :conv_frames[b]], alone[b][:conv_frames[b]],
                                   rtol=1e-4, atol=1e-4)
    assert not torch.allclose(plain[2, conv_frames[2]:feats_lens[2]],
                              alone[2][conv_frames[2]:], atol=1e-2)


def test_filling_the_cache_tunes_no_cudnn_algorithm(tiny_upstream: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose conv features go into the cache is never encoded again: cuDNN's autotuning
    is off for it, and back as it was for the rest of the step; with a full cache (the encoder
    runs again every epoch) it stays on."""
    _, ours = _pair(tiny_upstream)
    for p in ours.upstream.upstream.model.feature_extractor.parameters():
        p.requires_grad = False
    ours.cache_conv_features = True
    seen = []
    encode = ours.conv_features

    def recording(wavs: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        seen.append(torch.backends.cudnn.benchmark)
        return encode(wavs, lens)

    monkeypatch.setattr(ours, "conv_features", recording)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    with torch.no_grad():
        ours.utt_ids = ["a", "b"]
        ours(torch.randn(2, 8000) * 3000, torch.tensor([8000, 6000]))
        assert torch.backends.cudnn.benchmark is True
        ours.cache_max_bytes = ours._cache_bytes  # full: c is not cached, so its shape repeats
        ours.utt_ids = ["c"]
        ours(torch.randn(1, 7000) * 3000, torch.tensor([7000]))
    assert seen == [False, True] and "c" not in ours._cache


def test_positional_conv_sees_a_multiple_of_its_frames(tiny_upstream: Path) -> None:
    """The positional convolution runs on frames padded to POS_CONV_FRAMES (few shapes for
    cuDNN's autotuning), with the numbers of the unpadded convolution."""
    from cvasr.models.frontend import POS_CONV_FRAMES, _positional_conv

    _, ours = _pair(tiny_upstream)
    pos_conv = ours.upstream.upstream.model.encoder.pos_conv
    seen = []
    pos_conv[0].register_forward_hook(lambda m, args, out: seen.append(args[0].size(2)))
    # 45 frames padded to 64; 64, a multiple already, to 96 (a pad never zero: one graph)
    for frames, padded in ((45, 2 * POS_CONV_FRAMES), (64, 3 * POS_CONV_FRAMES)):
        seen.clear()
        x = torch.randn(2, frames, pos_conv[0].in_channels)
        x[1, 30:] = 0  # a shorter clip's masked frames, as contextualise leaves them
        with torch.no_grad():
            got = _positional_conv(pos_conv, x)
            want = pos_conv(x.transpose(1, 2)).transpose(1, 2)
        assert seen == [padded, frames] and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_compiled_positional_conv_spells_its_weight_norm_out(tiny_upstream: Path) -> None:
    """Compiled, the positional convolution's weight norm is plain ops in the forward and
    backward graphs: the module hook's `_weight_norm` has no decomposition for its backward, so
    inductor left it to aten's slow kernel (bench/NOTES.md, round 15). Values and gradients are
    the hook's (in float64: float32's rounding of the two spellings differs)."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    from cvasr.models.frontend import _positional_conv

    _, ours = _pair(tiny_upstream)
    pos_conv = ours.upstream.upstream.model.encoder.pos_conv.double()
    conv = pos_conv[0]
    ops: list[str] = []

    def record(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        ops.extend(str(node.target) for node in graph.graph.nodes if node.op == "call_function")
        return make_boxed_func(graph.forward)

    torch._dynamo.reset()
    compiled = torch.compile(lambda x: _positional_conv(pos_conv, x), fullgraph=True,
                             backend=aot_autograd(fw_compiler=record, bw_compiler=record))
    x = torch.randn(2, 45, conv.in_channels, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    results = []
    for run in (compiled, lambda x: pos_conv(x.transpose(1, 2)).transpose(1, 2)):
        inputs = x.clone().requires_grad_()
        out = run(inputs)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append([out.detach(), inputs.grad, conv.weight_g.grad, conv.weight_v.grad,
                        conv.bias.grad])
        pos_conv.zero_grad(set_to_none=True)
    assert any("convolution" in op for op in ops)  # both graphs recorded
    assert not [op for op in ops if "weight_norm" in op]
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_upstream_dropouts_train_as_a_checkpoint_saved_with_them(tiny_upstream: Path,
                                                                 tmp_path: Path) -> None:
    """`upstream_dropouts` on a checkpoint of pre-training dropouts (0.1 on hidden states and
    attention) trains as espnet2's own frontend does on the same weights saved with the
    fine-tuning dropouts (0.0): the same features in training mode, where dropout would act."""
    state = torch.load(tiny_upstream, weights_only=False)
    assert state["model_cfg"]["dropout"] == 0.1 and state["model_cfg"]["attention_dropout"] == 0.1
    state["model_cfg"].update(dropout=0.0, attention_dropout=0.0)
    no_dropout = tmp_path / "tiny_no_dropout.pt"
    torch.save(state, no_dropout)
    ref = S3prlFrontend(fs="16k", multilayer_feature=False,
                        frontend_conf={"upstream": "wav2vec2_custom", "path_or_url": str(no_dropout)})
    conf = {"upstream": "wav2vec2_custom", "path_or_url": str(tiny_upstream)}
    ours = Wav2Vec2S3prlFrontend(fs="16k", frontend_conf=conf, multilayer_feature=False,
                                 upstream_dropouts={"dropout": 0.0, "attention_dropout": 0.0})
    as_saved = Wav2Vec2S3prlFrontend(fs="16k", frontend_conf=conf, multilayer_feature=False)
    model = ours.upstream.upstream.model
    assert model.cfg.dropout == 0.0 and model.encoder.dropout == 0.0
    assert {m.p for m in model.encoder.layers[0].modules()
            if isinstance(m, torch.nn.Dropout) or type(m).__name__ == "FairseqDropout"} == {0.0}
    batch = torch.randn(2, 8000) * 3000
    lens = torch.tensor([8000, 6000])
    want, want_lens = ref.train()(batch, lens)
    got, got_lens = ours.train()(batch, lens)
    with_dropout, _ = as_saved.train()(batch, lens)
    assert torch.equal(got_lens, want_lens)
    for b, n in enumerate(want_lens.tolist()):
        torch.testing.assert_close(got[b, :n], want[b, :n], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(with_dropout[0, :10], want[0, :10], rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="upstream_dropouts: hidden_dropout not among"):
        Wav2Vec2S3prlFrontend(fs="16k", frontend_conf=conf, multilayer_feature=False,
                              upstream_dropouts={"hidden_dropout": 0.0})
    with pytest.raises(ValueError, match="dropout = 1.5 is not in"):
        Wav2Vec2S3prlFrontend(fs="16k", frontend_conf=conf, multilayer_feature=False,
                              upstream_dropouts={"dropout": 1.5})


def test_compile_options_from_the_command_line_and_a_misspelt_one_refused(
        tmp_path: Path, tiny_upstream: Path) -> None:
    """`--compile_options` (repeated, nested at the dots) reaches the training options as
    inductor's dotted keys; a key this torch's inductor lacks is refused when the model is
    prepared, before any batch (on CPU too, where nothing is compiled)."""
    from conftest import xlsr_model
    from cvasr.training.task import CvasrASRTask, SafeCheckpointTrainer

    parser = CvasrASRTask.get_parser()
    args = parser.parse_args(["--compile_options", "triton.mix_order_reduction_split_size=64",
                              "--compile_options", "triton.enable_pdl=true"])
    options = SafeCheckpointTrainer.build_options(args)
    assert inductor_options(options.compile_options) == {
        "triton.mix_order_reduction_split_size": 64, "triton.enable_pdl": True}
    assert SafeCheckpointTrainer.build_options(parser.parse_args([])).compile_options == {}
    model = xlsr_model(tmp_path, tiny_upstream)
    SafeCheckpointTrainer.prepare_model(model, options)  # CPU: eager, the options valid
    bad = SafeCheckpointTrainer.build_options(parser.parse_args(
        ["--compile_options", "triton.mix_order_split=64"]))
    with pytest.raises(ValueError, match=r"compile_options: triton\.mix_order_split not in"):
        SafeCheckpointTrainer.prepare_model(model, bad)
