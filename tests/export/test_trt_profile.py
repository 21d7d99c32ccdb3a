"""trt_profile(): one min/opt/max profile covering prefill and decode for every decoder input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slmc.errors import ConfigError
from slmc.export.io_spec import decoder_io
from slmc.export.trt_profile import parse_trtexec_shapes, trt_profile, trtexec_shape_args

IO = decoder_io(num_layers=2, num_key_value_heads=2, head_dim=16, vocab_size=384)["inputs"]


def test_profile_for_256_tokens_batch_4():
    profile = trt_profile(IO, max_seq_len=256, max_batch_size=4)
    assert list(profile) == [e["name"] for e in IO]
    assert profile["input_ids"] == ([1, 1], [1, 1], [4, 256])
    assert profile["position_ids"] == profile["input_ids"]
    assert profile["attention_mask"] == ([1, 1], [1, 128], [4, 256])
    for name in ("past_key_values.0.key", "past_key_values.1.value"):
        assert profile[name] == ([1, 2, 0, 16], [1, 2, 127, 16], [4, 2, 255, 16])


def test_opt_point_is_a_decode_step_at_the_given_context():
    profile = trt_profile(IO, max_seq_len=512, max_batch_size=2, opt_seq_len=100, opt_batch_size=2)
    _, opt, _ = zip(*[profile[n] for n in ("input_ids", "attention_mask", "past_key_values.0.key")])
    assert opt[0] == [2, 1] and opt[1] == [2, 100] and opt[2] == [2, 2, 99, 16]


@given(max_seq_len=st.integers(1, 8192), max_batch_size=st.integers(1, 64))
def test_profile_bounds_hold(max_seq_len, max_batch_size):
    profile = trt_profile(IO, max_seq_len=max_seq_len, max_batch_size=max_batch_size)
    for low, opt, high in profile.values():
        assert all(a <= b <= c for a, b, c in zip(low, opt, high))
    sequence, total, past = (profile[n] for n in ("input_ids", "attention_mask", "past_key_values.0.key"))
    for corner in (0, 1):  # min and opt are real steps: past + sequence == total
        assert past[corner][2] + sequence[corner][1] == total[corner][1]
    assert total[2][1] == max_seq_len and past[2][2] == max_seq_len - 1 and sequence[2][1] == max_seq_len
    assert past[0][2] == 0  # empty past (prefill) is inside the profile


def test_trtexec_shape_args_round_trip():
    profile = trt_profile(IO, max_seq_len=256, max_batch_size=4)
    args = trtexec_shape_args(profile)
    assert args["maxShapes"].startswith("input_ids:4x256,attention_mask:4x256,")
    for key, corner in (("minShapes", 0), ("optShapes", 1), ("maxShapes", 2)):
        assert parse_trtexec_shapes(args[key]) == {n: s[corner] for n, s in profile.items()}


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="'window'"):
        trt_profile([{"name": "x", "dtype": "int64", "shape": ["window"]}], max_seq_len=8, max_batch_size=1)
    with pytest.raises(ConfigError, match="opt_seq_len"):
        trt_profile(IO, max_seq_len=8, max_batch_size=1, opt_seq_len=9)
    with pytest.raises(ConfigError, match="max_seq_len"):
        trt_profile(IO, max_seq_len=0, max_batch_size=1)
    with pytest.raises(ConfigError, match="trtexec"):
        trtexec_shape_args({"a,b": ([1], [1], [1])})
