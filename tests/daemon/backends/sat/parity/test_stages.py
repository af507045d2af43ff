"""Parity with stable-audio-tools 0.0.19 on tiny SAO-1.0- and SAO-Small-shaped checkpoints.

Each golden case goes through its runner (conftest.RUNNERS), which returns every role the case
holds. ``isolated`` runs feed each stage the reference's recorded inputs (tier 1 and tier 2);
``end_to_end`` runs chain our own stages as the daemon does (tier 2 only, bit-exact). The
harness fails on a golden role no runner produced, and on a produced role the goldens lack.
"""

import pytest


def test_matches_reference(parity, golden_case):
    tier, root, model, case_name, mode = golden_case
    g = parity.load_goldens(tier, root, model)
    parity.set_threads(g.meta)
    case = g.case(case_name)
    produced = parity.RUNNERS[case["kind"]](g, case, mode == "isolated")
    g.check(case, produced)


def test_every_golden_tensor_is_used_and_every_kind_has_a_runner(parity):
    for tier, root in parity.golden_roots():
        for model in parity.MODELS:
            meta = parity.golden_meta(root, model)
            used: set[str] = set()
            for case in meta["cases"]:
                assert case["kind"] in parity.RUNNERS, f"{model}: no runner for {case['kind']!r}"
                for ref in [*case["inputs"].values(), *case["outputs"].values()]:
                    used.update(ref if isinstance(ref, list) else [ref])
            unused = set(meta["tensors"]) - used
            assert not unused, f"{tier}/{model}: golden tensors no case uses: {sorted(unused)}"


def test_a_renamed_or_missing_role_fails(parity):
    g = parity.load_goldens("committed", parity.COMMITTED, "sao10-tiny")
    case = g.case("number_seconds_total")
    produced = parity.RUNNERS["number"](g, case, True)
    with pytest.raises(AssertionError, match="golden roles no runner produced"):
        g.check(case, {"embedding": produced["embedding"]})
    with pytest.raises(AssertionError, match="produced roles the goldens lack"):
        g.check(case, {**produced, "embeddings": produced["embedding"]})
