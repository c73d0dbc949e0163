"""A tokenizer's ids for a text are the whole text's, or the text is refused in one line (issue 28 items 1-4, 12):
text_file.py cuts a text only where bpe.py proves the tokenizer's kind keeps the ids, and a tokenizer is a pure
text -> ids map. Tokenizers of every kind the tokenizers library offers, trained here on a little Shakespeare."""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from bigram_jax.corpus import text_file, token_file
from bigram_jax.errors import UserError

tokenizers = pytest.importorskip("tokenizers")
tiktoken = pytest.importorskip("tiktoken")
from tokenizers import (
    Tokenizer,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from bigram_jax.corpus import bpe

pytestmark = pytest.mark.usefixtures("own_cache")


@pytest.fixture(scope="module")
def sample(shakespeare_text) -> str:
    return shakespeare_text[:60_000]


def _texts(sample: str) -> dict[str, str]:
    """Texts with blank lines, CRLF line ends, trailing spaces, none of them, '/' after line breaks."""
    lines = sample[:20_000].splitlines()
    return {
        "blank_lines": "\n\n".join(lines) + "\n",
        "crlf": "\r\n".join(lines) + "\r\n",
        "trailing_spaces": "".join(f"{line}{' ' * (i % 3)}\n" for i, line in enumerate(lines)),
        "no_line_breaks": " ".join(lines),
        "awkward": "".join(f"{line}\n{'/' if i % 5 == 0 else ''}{' ' if i % 7 == 0 else ''}"
                           for i, line in enumerate(lines)),
    }


def _trained(model, pre, trainer, sample: str, normalizer=None) -> Tokenizer:
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.train_from_iterator([sample], trainer)
    return tok


LLAMA3 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def _hf_kinds(sample: str) -> dict[str, tuple[Tokenizer, bool]]:
    """{name: (tokenizer, whether its kind is proved cuttable)}: every model, every pre-tokenizer."""
    bpe_t = lambda **k: trainers.BpeTrainer(vocab_size=300, show_progress=False, **k)
    byte_alpha = {"initial_alphabet": pre_tokenizers.ByteLevel.alphabet()}
    uni = lambda: trainers.UnigramTrainer(vocab_size=300, show_progress=False, unk_token="<unk>",
                                          special_tokens=["<unk>"])
    kinds = {
        "bpe_bytelevel": (_trained(models.BPE(), pre_tokenizers.ByteLevel(add_prefix_space=False), bpe_t(**byte_alpha),
                                   sample), True),
        "bpe_bytelevel_prefix_space": (_trained(models.BPE(), pre_tokenizers.ByteLevel(add_prefix_space=True),
                                                bpe_t(**byte_alpha), sample), True),
        "bpe_bytelevel_no_regex": (_trained(models.BPE(), pre_tokenizers.ByteLevel(use_regex=False),
                                            bpe_t(**byte_alpha), sample), False),
        "bpe_no_pre_tokenizer": (_trained(models.BPE(unk_token="[UNK]"), None, bpe_t(special_tokens=["[UNK]"]),
                                          sample), False),
        "bpe_split": (_trained(models.BPE(unk_token="[UNK]"), pre_tokenizers.Split(" ", "merged_with_next"),
                               bpe_t(special_tokens=["[UNK]"]), sample), False),
        "bpe_split_llama3": (_trained(models.BPE(), pre_tokenizers.Sequence([pre_tokenizers.Split(tokenizers.Regex(
            LLAMA3), "isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
            bpe_t(**byte_alpha), sample), True),
        "wordpiece_whitespace": (_trained(models.WordPiece(unk_token="[UNK]"), pre_tokenizers.Whitespace(),
                                          trainers.WordPieceTrainer(vocab_size=300, show_progress=False,
                                                                    special_tokens=["[UNK]"]),
                                          sample, normalizers.BertNormalizer()), True),
        "wordlevel_whitespace_split": (_trained(models.WordLevel(unk_token="[UNK]"), pre_tokenizers.WhitespaceSplit(),
                                                trainers.WordLevelTrainer(special_tokens=["[UNK]"],
                                                                          show_progress=False), sample), True),
        "unigram_bert": (_trained(models.Unigram(), pre_tokenizers.BertPreTokenizer(), uni(), sample,
                                  normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])), True),
        "unigram_metaspace_no_split": (_trained(models.Unigram(), pre_tokenizers.Metaspace(split=False), uni(),
                                                sample), False),
    }
    for scheme in ("always", "first", "never"):
        kinds[f"unigram_metaspace_{scheme}"] = (_trained(models.Unigram(), pre_tokenizers.Metaspace(
            prepend_scheme=scheme), uni(), sample), True)
        kinds[f"bpe_metaspace_{scheme}"] = (_trained(models.BPE(unk_token="[UNK]"), pre_tokenizers.Metaspace(
            prepend_scheme=scheme), bpe_t(special_tokens=["[UNK]"]), sample), True)
    merges = kinds["bpe_no_pre_tokenizer"][0].get_vocab()
    assert any(len(t) > 2 and "\n" in t[1:-1] for t in merges), "a merge across a line break"
    return kinds


@pytest.fixture(scope="module")
def hf_kinds(sample, tmp_path_factory) -> dict[str, tuple[Path, Tokenizer, bool]]:
    folder = tmp_path_factory.mktemp("kinds")
    out = {}
    for name, (tok, cuttable) in _hf_kinds(sample).items():
        tok.save(str(folder / f"{name}.json"))
        out[name] = (folder / f"{name}.json", tok, cuttable)
    return out


PATTERNS = {"r50k": bpe._R50K_PAT, "cl100k": bpe._CL100K_PAT, "o200k": bpe._O200K_PAT, "custom": r"\S+\s*|\s+"}


@pytest.fixture
def small_items(monkeypatch):
    """Items of ~97 characters and reads of 1000 bytes: thousands of cuts, reads ending mid-character."""
    monkeypatch.setattr(text_file, "ITEM_CHARS", 97)
    monkeypatch.setattr(text_file, "CHUNK", 1000)


def _encoded_or_refused(path: Path, tok, whole: list[int]) -> str:
    """'equal' when the cached ids are the whole text's, 'refused' when refused in one line."""
    try:
        tf, _, _ = text_file.encode_to_cache(path, path.stat(), tok)
    except UserError as e:
        assert "\n" not in str(e), str(e)
        return "refused"
    ids = np.asarray(tf.tokens).tolist()
    assert ids == whole, f"{tok.describe()}: {len(ids)} ids vs the whole text's {len(whole)}"
    return "equal"


@pytest.mark.usefixtures("small_items")
@pytest.mark.parametrize("whole_max", [text_file.WHOLE_MAX, 5000])
def test_every_kind_of_tokenizer_equals_the_whole_text_or_is_refused(tmp_path, sample, hf_kinds, tk_ranks,
                                                                       monkeypatch, whole_max):
    """Each tokenizer on each text: the ids of the whole text, or one line. The proved kinds are cut thousands
    of times and equal; the others are encoded whole when small (equal) and refused when over WHOLE_MAX."""
    monkeypatch.setattr(text_file, "WHOLE_MAX", whole_max)
    cases = [(name, bpe.hugging_face(p), hf.encode, cuttable) for name, (p, hf, cuttable) in hf_kinds.items()]
    for name, pat in PATTERNS.items():
        enc = tiktoken.Encoding(name=f"t_{name}", pat_str=pat, mergeable_ranks=tk_ranks, special_tokens={})
        cases.append((name, bpe.Tiktoken(enc.name, enc), enc.encode_ordinary, name != "custom"))
    for text_name, text in _texts(sample).items():
        path = tmp_path / f"{text_name}.txt"
        path.write_bytes(text.encode())
        for name, tok, encode, cuttable in cases:
            whole = encode(text)
            whole = list(getattr(whole, "ids", whole))
            assert bool(tok.cut_rules[0]) == cuttable, (name, tok.cut_rules)
            got = _encoded_or_refused(path, tok, whole)
            assert got == ("equal" if cuttable or len(text) <= whole_max else "refused"), (name, text_name, got)


def test_line_cuts_are_where_the_rules_say(tmp_path):
    """The cut points themselves: before a space after a non-space; after a line break between a non-space and
    a character that is neither whitespace nor '/'; nowhere else."""
    both = text_file.cutter(type("T", (), {"cut_rules": (bpe.BOTH, ""), "describe": lambda self: "t"})()).pattern
    text = "ab cd\nef  g\r\nh\n/i\n j.\nk"
    cuts = [m.start() for m in both.finditer(text)]
    assert cuts == [2, 6, 8, 22], cuts  # 'b| ', 'd\n|e', 'f| ' (not ' | '), '.\n|k' (not '\r\n|', '\n|/', '\n| ')


def test_normal_forms_keep_the_cut_classes():
    """The proof bpe.py's normalizer rules rest on, for every code point: NFC, NFD and lowercasing map a
    non-space character to non-empty text with no whitespace at either end; NFKC and NFKD to text with no
    whitespace at its end (some begin with a space: their LINE cuts are not kept)."""
    for c in map(chr, range(0x110000)):
        if c.isspace() or 0xD800 <= ord(c) < 0xE000:
            continue
        for form in ("NFC", "NFD", "lower"):
            n = c.lower() if form == "lower" else unicodedata.normalize(form, c)
            assert n and not n[0].isspace() and not n[-1].isspace(), (hex(ord(c)), form)
        for form in ("NFKC", "NFKD"):
            n = unicodedata.normalize(form, c)
            assert n and not n[-1].isspace(), (hex(ord(c)), form)


def test_truncation_padding_and_post_processing_are_off(tmp_path, sample, hf_kinds):
    """A tokenizer.json saved with truncation at 128, padding and a post-processor: the corpus and a prompt are
    the text's pure ids, whole."""
    _, original, _ = hf_kinds["bpe_bytelevel"]
    tok = Tokenizer.from_str(original.to_str())
    pure = tok.encode(sample, add_special_tokens=False).ids
    tok.add_special_tokens(["[CLS]", "[PAD]"])
    tok.enable_truncation(128)
    tok.enable_padding(length=256, pad_token="[PAD]", pad_id=tok.token_to_id("[PAD]"))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A", special_tokens=[
        ("[CLS]", tok.token_to_id("[CLS]"))])
    (tmp_path / "t.json").write_text(tok.to_str())
    assert json.loads(tok.to_str())["truncation"]["max_length"] == 128
    saved = tok.encode(sample).ids  # as saved: cut at 128, padded to 256
    assert len(saved) == 256 and saved[:1] == [tok.token_to_id("[CLS]")] and saved[-1] == tok.token_to_id("[PAD]")
    mine = bpe.hugging_face(tmp_path / "t.json")
    (tmp_path / "t.txt").write_text(sample)
    tf, _, _ = text_file.encode_to_cache(tmp_path / "t.txt", (tmp_path / "t.txt").stat(), mine)
    assert np.asarray(tf.tokens).tolist() == pure and len(pure) > 10_000
    prompt = mine.encode(sample[:3000]).tolist()
    assert prompt == original.encode(sample[:3000], add_special_tokens=False).ids and len(prompt) > 256


def _char_bpe(tmp_path: Path, chars: str, unk: str | None = None, sparse: dict | None = None) -> Path:
    """A BPE tokenizer.json with a token per character of `chars` and no merges; `sparse` moves some ids."""
    vocab = {c: i for i, c in enumerate(chars)} | ({unk: len(chars)} if unk else {}) | (sparse or {})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk))
    path = tmp_path / f"chars-{len(vocab)}-{unk}.json"
    tok.save(str(path))
    return path


def test_ids_past_65535_are_kept_whole(tmp_path, sample):
    """Issue 28 item 3: ~75 entries with one id 65,584 ('e'): the token file holds 65,584, not a wrapped 48."""
    chars = "".join(sorted(set(sample)))
    tok = bpe.hugging_face(_char_bpe(tmp_path, chars, sparse={"e": 65_584}))
    assert tok.max_id == 65_584 and tok.vocab_size == 65_585
    (tmp_path / "t.txt").write_text(sample)
    tf, _, _ = text_file.encode_to_cache(tmp_path / "t.txt", (tmp_path / "t.txt").stat(), tok)
    ids = np.asarray(tf.tokens)
    assert tf.tokens.dtype == np.dtype("<u4") and (ids == 65_584).sum() == sample.count("e")
    assert ids.tolist() == tok.encode(sample).tolist()


def test_a_cast_that_would_wrap_is_refused(tmp_path):
    with open(tmp_path / "t.bin", "wb") as f, pytest.raises(UserError, match="token id 65584 does not fit"):
        token_file.write_ids(f, np.array([1, 65_584]), "<u2", tmp_path / "t.bin")
    assert token_file.dtype_for(65_535) == "<u2" and token_file.dtype_for(65_536) == "<u4"


def test_a_character_the_tokenizer_lacks_is_refused_by_name(tmp_path, sample, capsys):
    """Issue 28 item 4: no unknown token, no byte fallback: 'z' would be dropped; refused naming it (the corpus
    and a prompt). With an unknown token: encoded, and the run says how many characters went to it."""
    chars = "".join(sorted(set(sample) - {"z"}))
    (tmp_path / "t.txt").write_text(sample)
    assert "z" in sample
    lacking = bpe.hugging_face(_char_bpe(tmp_path, chars))
    with pytest.raises(UserError, match="no token for 1 character.*'z'"):
        text_file.encode_to_cache(tmp_path / "t.txt", (tmp_path / "t.txt").stat(), lacking)
    with pytest.raises(UserError, match="'z'"):
        lacking.encode("a zebra")
    unk = bpe.hugging_face(_char_bpe(tmp_path, chars, unk="[UNK]"))
    tf, _, _ = text_file.encode_to_cache(tmp_path / "t.txt", (tmp_path / "t.txt").stat(), unk)
    assert len(tf.tokens) == len(sample)
    assert f"note: {sample.count('z'):,} character(s) of {tmp_path / 't.txt'} went to the unknown token '[UNK]'" \
        in capsys.readouterr().err
    text_file.encode_to_cache(tmp_path / "t.txt", (tmp_path / "t.txt").stat(), unk)  # from the cache: said again
    assert "went to the unknown token" in capsys.readouterr().err


def test_a_word_level_tokenizer_without_unk_is_one_line(tmp_path, sample):
    """Issue 28 item 8: WordLevel with no [UNK] meeting an unknown word raised the library's exception."""
    tok = Tokenizer(models.WordLevel({"the": 0, "and": 1}))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "w.json"))
    (tmp_path / "t.txt").write_text(sample)
    with pytest.raises(UserError, match="cannot encode the text") as e:
        text_file.encode_to_cache(tmp_path / "t.txt", (tmp_path / "t.txt").stat(), bpe.hugging_face(tmp_path / "w.json"))
    assert "\n" not in str(e.value)


def test_a_full_disk_is_said_plainly(tmp_path, sample, hf_kinds, monkeypatch):
    """Issue 28 item 12: the encoding's writes fail with ENOSPC (/dev/full): "no space left on device writing
    <the file>", not numpy's "N requested and M written"."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    real = text_file._encode
    monkeypatch.setattr(text_file, "_encode", lambda path, st, tok, sha, out, *a: real(
        path, st, tok, sha, Path("/dev/full"), *a))
    (tmp_path / "t.txt").write_text(sample)
    with pytest.raises(UserError, match="^no space left on device writing /dev/full"):
        text_file.encode_to_cache(tmp_path / "t.txt", (tmp_path / "t.txt").stat(),
                                  bpe.hugging_face(hf_kinds["bpe_bytelevel"][0]))


def test_a_text_that_encodes_to_nothing_says_so(tmp_path):
    """Issue 28 item 12: 300 KB of whitespace through a pre-tokenizer that drops it: "encodes to nothing"."""
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "the": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "w.json"))
    (tmp_path / "t.txt").write_text(" \n\t" * 100_000)
    with pytest.raises(UserError, match="encodes .*t.txt to nothing"):
        text_file.encode_to_cache(tmp_path / "t.txt", (tmp_path / "t.txt").stat(), bpe.hugging_face(tmp_path / "w.json"))


@pytest.mark.parametrize("chunk", [16 << 20, 1201, 1202])
@pytest.mark.parametrize("tail, at", [(b"\xe2\x82", 1200), (b"\xe2\x82(ok", 1200), (b"ok\xff", 1202)])
def test_a_bad_utf8_sequence_is_reported_at_its_byte(tmp_path, monkeypatch, chunk, tail, at):
    """Issue 28 item 12: a sequence cut short (at the end, or before an ASCII byte), whatever the reads: the
    offset of its first byte (it was reported one byte late per byte held over from the read before)."""
    monkeypatch.setattr(text_file, "CHUNK", chunk)
    (tmp_path / "t.txt").write_bytes(b"ok\n" * 400 + tail)
    with pytest.raises(UserError, match=f"bad byte at offset {at}\\)"):
        text_file._vocab_and_sha(tmp_path / "t.txt", (tmp_path / "t.txt").stat().st_size)


def test_a_text_with_no_proved_cut_for_max_item_characters_is_refused(tmp_path, hf_kinds, monkeypatch):
    """Bounded memory (issue 28 item 6): an item never passes MAX_ITEM characters. A text that gives a proved kind
    no cut for longer (one long word) is refused in one line, before anything of it is encoded."""
    monkeypatch.setattr(text_file, "MAX_ITEM", 5000)
    monkeypatch.setattr(text_file, "ITEM_CHARS", 97)
    path = tmp_path / "t.txt"
    path.write_text("word " * 2000 + "x" * 6000 + " tail\n")
    tok = bpe.hugging_face(hf_kinds["bpe_bytelevel"][0])
    monkeypatch.setattr(type(tok), "encode_batch", lambda self, items: pytest.fail("encoded"))
    with pytest.raises(UserError, match=r"no place where its tokenizer's pieces provably end .* for over 5,000 "
                                        r"characters from character 9,99\d") as e:
        text_file.encode_to_cache(path, path.stat(), tok)
    assert "\n" not in str(e.value)


BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}


@pytest.mark.parametrize("spec, rules", [
    ({}, {"space", "line"}),
    ({"added_tokens": [{"content": "<|a b|>"}]}, set()),  # an added token holding a space could span a cut
    ({"added_tokens": [{"content": "<x>", "rstrip": True}]}, {"line"}),  # it takes the space a SPACE cut keeps
    ({"added_tokens": [{"content": "<x>", "lstrip": True}]}, {"space"}),  # it takes a LINE cut's line break
    ({"normalizer": {"type": "NFKC"}}, {"space"}),  # U+00A8 -> ' \u0308' after a line break
    ({"normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Replace"}]}}, set()),
    ({"normalizer": {"type": "Prepend", "prepend": "_"}}, set()),  # prepended to every piece
    ({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [BYTE_LEVEL, {"type": "Metaspace",
                                                                          "prepend_scheme": "first"}]}}, set()),
    ({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [BYTE_LEVEL, {"type": "Digits"}]}}, {"space", "line"}),
    ({"pre_tokenizer": {"type": "Whitespace"}, "normalizer": {"type": "BertNormalizer"}}, {"space", "line"}),
    ({"model": {"type": "Mystery"}}, set()),
])
def test_the_rules_follow_every_part_of_the_tokenizer(spec, rules):
    """hugging_face_rules on tokenizer.json parts: a ByteLevel BPE, with each part changed."""
    full = {"model": {"type": "BPE"}, "pre_tokenizer": BYTE_LEVEL, "normalizer": None, "added_tokens": []} | spec
    got, why = bpe.hugging_face_rules(full)
    assert got == rules and (bool(why) != bool(rules)), (got, why)
