"""Streaming text: complete UTF-8 only, stop strings held back, pieces == final text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from slmc.runtime.tokenizer import TextStream, TextTokenizer, final_text


def stream_all(tok: TextTokenizer, ids: list[int], stop=()) -> tuple[list[str], str]:
    stream, pieces = TextStream(tok, stop), []
    used = []
    for token in ids:
        used.append(token)
        stream.push(token)
        pieces.append(stream.take())
        if stream.stopped:
            break
    final = final_text(tok, used, stop)
    pieces.append(stream.finish(final))
    return [p for p in pieces if p], final


def test_emoji_split_across_byte_tokens_is_emitted_whole(text_tokenizer):
    tok = text_tokenizer
    text = "héllo 🙂 wörld café 🚀!"
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # the emoji really is several byte-level tokens
    pieces, final = stream_all(tok, ids)
    assert "".join(pieces) == final == text
    assert not any("\ufffd" in p for p in pieces)
    assert "🙂" in pieces or any("🙂" in p for p in pieces)


def test_incomplete_character_at_the_end_is_flushed_like_decode(text_tokenizer):
    tok = text_tokenizer
    ids = tok.encode("ok 🙂")[:-1]  # drop the emoji's last byte token
    pieces, final = stream_all(tok, ids)
    assert "".join(pieces) == final == tok.decode(ids)
    assert final.endswith("\ufffd")


def test_stop_string_is_cut_and_never_streamed(text_tokenizer):
    tok = text_tokenizer
    ids = tok.encode("the small model runs on the device")
    pieces, final = stream_all(tok, ids, stop=("model",))
    assert final == "the small " and "".join(pieces) == final


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.integers(0, 383), min_size=1, max_size=40),
       stop=st.lists(st.text(alphabet="aeiklmnorstuz é.", min_size=1, max_size=4), max_size=2))
def test_pieces_always_concatenate_to_the_final_text(text_tokenizer, ids, stop):
    tok = text_tokenizer
    pieces, final = stream_all(tok, ids, tuple(stop))
    assert "".join(pieces) == final
    assert not any(s in final for s in stop)
