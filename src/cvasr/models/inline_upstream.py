"""An s3prl wav2vec 2.0 upstream described in the experiment's config.yaml itself, no checkpoint.

A trained (or imported) experiment's model file holds every weight of the upstream; the
upstream checkpoint its config names is only needed to build the network's shape. Naming the
shape in the config instead (`upstream: wav2vec2_inline` with `extra_conf: {model_cfg, task_cfg}`,
s3prl's own configuration fields) makes an experiment dir self-contained: it can be moved,
packed with espnet2's pack command and loaded by stock espnet2 anywhere.

The upstream is built by s3prl's own wav2vec 2.0 expert, from an in-memory checkpoint whose
weights are zeros (broadcast views of one element each, so nothing big is allocated or
serialised); the model file loaded after it supplies the real ones. Built from the config alone,
without a model file, the upstream is all zeros, not a pretrained model.
"""

from __future__ import annotations

import io
from typing import Any

import torch

#: the s3prl hub name configs use for an upstream described inline
NAME = "wav2vec2_inline"


def wav2vec2_inline(model_cfg: dict[str, Any], task_cfg: dict[str, Any], refresh: bool = False,
                    **kwargs: Any):
    """s3prl hub entry: its `UpstreamExpert` for the wav2vec 2.0 that the two configs describe."""
    from s3prl.upstream.utils import merge_with_parent
    from s3prl.upstream.wav2vec2.expert import UpstreamExpert
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model

    with torch.device("meta"):  # the shapes only
        shapes = Wav2Vec2Model(merge_with_parent(Wav2Vec2Config, dict(model_cfg))).state_dict()
    zeros = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in shapes.items()}
    buffer = io.BytesIO()
    torch.save({"task_cfg": dict(task_cfg), "model_cfg": dict(model_cfg), "model_weight": zeros},
               buffer)
    buffer.seek(0)
    return UpstreamExpert(buffer, **kwargs)


def register() -> None:
    """Make `upstream: wav2vec2_inline` known to s3prl (S3PRLUpstream finds names in s3prl.hub)."""
    import s3prl.hub

    if getattr(s3prl.hub, NAME, None) is not wav2vec2_inline:
        setattr(s3prl.hub, NAME, wav2vec2_inline)


def frontend_conf(model_cfg: dict[str, Any], task_cfg: dict[str, Any]) -> dict[str, Any]:
    """The inner `frontend_conf` of a config that describes its upstream inline."""
    return {"upstream": NAME, "extra_conf": {"model_cfg": dict(model_cfg),
                                              "task_cfg": dict(task_cfg)}}
