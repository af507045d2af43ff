"""Full-size structure: modules built from the published configs have exactly the reference
checkpoint keys and shapes (lists made with stable-audio-tools: tools/dump_reference_keys.py)."""

import json
from pathlib import Path

import pytest
import torch

from latentloop_daemon.backends.sat.config import parse_model_config
from latentloop_daemon.backends.sat.known_configs import known_config
from latentloop_daemon.backends.sat.model import StableAudioModel

DATA = Path(__file__).resolve().parents[3] / "data"


@pytest.mark.parametrize(("name", "count"), [("sao-1.0", 745), ("sao-small", 750)])
def test_meta_model_matches_reference_keys(name, count):
    reference = json.loads((DATA / "keys" / f"{name}.json").read_text())
    assert reference["count"] == count
    config = parse_model_config(known_config(name))
    with torch.device("meta"):
        model = StableAudioModel(config)
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    theirs = [[k, shape] for k, shape, _dtype in reference["keys"]]
    assert sorted(ours) == sorted(theirs)
    assert len(ours) == count


@pytest.mark.parametrize("name", ["sao-1.0", "sao-small"])
def test_known_configs_equal_the_published_model_sections(name):
    published = json.loads((DATA / "configs" / f"{name}.model_config.json").read_text())
    ours = known_config(name)
    assert ours["model"] == published["model"]
    for key in ("model_type", "sample_size", "sample_rate", "audio_channels"):
        assert ours[key] == published[key]


def test_parameter_counts_match_the_spec():
    # engine-spec §3.2 / §4: SAO Small DiT 340,928,672 elements + seconds conditioner 198,272.
    config = parse_model_config(known_config("sao-small"))
    with torch.device("meta"):
        model = StableAudioModel(config)
    dit = sum(t.numel() for t in model.model.state_dict().values())
    cond = sum(t.numel() for t in model.conditioner.state_dict().values())
    assert (dit, cond) == (340_928_672, 198_272)
