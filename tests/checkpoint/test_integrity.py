"""Checkpoint integrity (bigram_jax/checkpoint/integrity.py): flipped bits and edited metadata refused."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigram_jax import load_checkpoint
from bigram_jax.checkpoint import integrity
from bigram_jax.compile import programs
from bigram_jax.config import Config
from bigram_jax.errors import UserError
from bigram_jax.train import init_state
from tests.conftest import _digest, ok, one_line, run_cli, steps


def _flip(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at % len(raw)] ^= 0x10
    path.write_bytes(bytes(raw))


def test_any_flipped_bit_in_the_arrays_is_found_on_load_and_resume(run, tmp_path):
    from bigram_jax.checkpoint.manager import Checkpoints
    from bigram_jax.config import Config
    from bigram_jax.train import init_state

    def state_of(d: Path) -> list[np.ndarray]:
        with Checkpoints(d / "checkpoints", read_only=True) as c:
            st = c.restore_state(300, abstract, c.read_meta(300))
        return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
                for x in jax.tree.leaves(st)]

    with Checkpoints(run / "checkpoints", read_only=True) as c:
        abstract = jax.eval_shape(lambda: init_state(Config(**c.read_meta(300)["config"]), 65))
    intact, intact_state, refused = load_checkpoint(run).params, state_of(run), 0
    data = sorted(p for p in (run / "checkpoints" / "300" / "state").rglob("*") if p.parent.name == "d")
    assert len(data) > 1
    for k, f in enumerate(data):
        for at in (7, f.stat().st_size // 2, f.stat().st_size - 3):
            damaged = tmp_path / f"d{k}_{at}"
            shutil.copytree(run, damaged)
            _flip(damaged / f.relative_to(run), at)
            try:  # the full state: refused, or (a flip in bytes no value depends on) exactly as saved
                for a, b in zip(state_of(damaged), intact_state, strict=True):
                    np.testing.assert_array_equal(a, b)
            except UserError as e:
                assert "step 300" in str(e) and ("damaged" in str(e) or "unreadable" in str(e))
                refused, caught = refused + 1, (f, at)
            try:  # the params alone: damaged ones are refused, the others load as they were saved
                got = load_checkpoint(damaged).params
                np.testing.assert_array_equal(got["params"]["token_embedding_table"]["embedding"],
                                              intact["params"]["token_embedding_table"]["embedding"])
            except UserError as e:
                assert "step 300" in str(e) and ("damaged" in str(e) or "unreadable" in str(e))
            shutil.rmtree(damaged)
    assert refused >= 3  # flips in the arrays themselves are caught (others hit bytes no value depends on)
    damaged = tmp_path / "resume"
    shutil.copytree(run, damaged)
    _flip(damaged / caught[0].relative_to(run), caught[1])  # a flip that full restores refuse
    one_line(run_cli("train.py", "--resume", "--out-dir", str(damaged), "--max-iters", "400"), 2, "step 300",
             "step 200 is intact")


def test_damaged_checkpoints_are_one_line_errors(run, tmp_path):
    for d in ("missing", "empty"):
        if d == "empty":
            (tmp_path / d).mkdir()
        r = run_cli("sample.py", "--checkpoint", str(tmp_path / d))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    run = shutil.copytree(run, tmp_path / "run")
    *older, latest = steps(run)
    for f in (run / "checkpoints" / str(latest) / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "manifest" not in f.name and "METADATA" not in f.name:
            f.write_bytes(b"\x13" * f.stat().st_size)  # corrupt the array data
    (run / "checkpoints" / str(latest) / "meta" / "metadata").write_text("{not json")
    before = _digest(run / "checkpoints")
    for script, argv in (("sample.py", ["--checkpoint", str(run)]), ("train.py", ["--resume", "--out-dir", str(run)])):
        r = run_cli(script, *argv)
        assert r.returncode == 2 and "unreadable" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert _digest(run / "checkpoints") == before  # nothing else touched
    for step in older:  # the older checkpoints still load
        ok(run_cli("sample.py", "--checkpoint", str(run), "--step", str(step), "--num-tokens", "10"))
    with pytest.raises(UserError, match="unreadable"):
        load_checkpoint(run)


def edited(run: Path, to: Path, edit) -> Path:
    """A copy of `run` whose step-300 metadata JSON went through `edit` (which changes it in place)."""
    shutil.copytree(run, to)
    path = to / "checkpoints" / "300" / "meta" / "metadata"
    meta = json.loads(path.read_text())
    before = json.dumps(meta, sort_keys=True)
    edit(meta)
    assert json.dumps(meta, sort_keys=True) != before
    path.write_text(json.dumps(meta))
    return to


def _swap_vocab(meta: dict) -> None:
    v = meta["vocab"]
    meta["vocab"] = v[:20] + v[21] + v[20] + v[22:]


@pytest.mark.usefixtures("own_cache")
def test_edited_checkpoint_metadata_is_refused_by_sample_and_load(run, tmp_path):
    """Issue 20, case 5a: two characters of the vocabulary swapped in the latest metadata (valid JSON):
    sample.py refuses in one line naming step 300, the metadata and its checksum; load_checkpoint raises."""
    from bigram_jax import load_checkpoint
    from bigram_jax.errors import UserError

    ok(run_cli("sample.py", "--checkpoint", str(run), "--num-tokens", "5"))  # the intact run samples
    d = edited(run, tmp_path / "vocab", _swap_vocab)
    one_line(run_cli("sample.py", "--checkpoint", str(d), "--num-tokens", "5"), 2, "step 300", "metadata",
             "checksum")
    with pytest.raises(UserError):
        load_checkpoint(d)


@pytest.mark.usefixtures("own_cache")
@pytest.mark.parametrize("key,value", [("learning_rate", 0.1), ("seed", 7)])
def test_an_edited_config_in_checkpoint_metadata_is_refused_by_resume(run, tmp_path, key, value):
    """Issue 20, case 5b: config.learning_rate (or config.seed) edited in the latest metadata: --resume refuses
    in one line naming the metadata's checksum."""
    d = edited(run, tmp_path / key, lambda m: m["config"].__setitem__(key, value))
    one_line(run_cli("train.py", "--out-dir", str(d), "--resume", "--max-iters", "400"), 2, "metadata", "checksum")


@pytest.mark.usefixtures("own_cache")
def test_an_edited_vocab_size_in_checkpoint_metadata_is_refused_as_such(run, tmp_path):
    """Issue 20, case 5c: vocab_size edited to 64: the same one-line refusal naming the checksum (not a table
    size mismatch)."""
    d = edited(run, tmp_path / "v64", lambda m: m.__setitem__("vocab_size", 64))
    one_line(run_cli("train.py", "--out-dir", str(d), "--resume", "--max-iters", "400"), 2, "metadata", "checksum")


@pytest.mark.usefixtures("own_cache")
def test_metadata_of_this_version_without_its_checksum_is_refused(run, tmp_path):
    """The checksum deleted along with the edit it would show: metadata written by 0.2.0 or later must carry one
    (older versions wrote none, and theirs loads as it is: tests/checkpoint/test_resume.py's fixtures)."""
    def edit(meta: dict) -> None:
        _swap_vocab(meta)
        del meta["meta_sha256"]

    one_line(run_cli("sample.py", "--checkpoint", str(edited(run, tmp_path / "gone", edit)), "--num-tokens", "5"),
             2, "step 300", "metadata", "checksum")


def test_checksums_on_a_device_match_the_hosts_and_are_kept_between_runs(tmp_path, monkeypatch):
    """An accelerator's arrays are summed by one program on the device: the same numbers as numpy's on the host,
    and a later process loads that program instead of compiling it at its first checkpoint."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(programs, "_LOADED", {})
    jax.clear_caches()
    state = init_state(Config(), 65)
    on_host = integrity.checksums(state)
    monkeypatch.setattr(integrity, "_in_host_memory", lambda arrays: False)  # as on a GPU or TPU
    assert integrity.checksums(state) == on_host
    assert len(list((tmp_path / "cache" / "bigram_jax" / "programs").glob("*.bin"))) == 1
    monkeypatch.setattr(programs, "_LOADED", {})  # a new process: the program must come from the cache
    jax.clear_caches()
    monkeypatch.setattr(programs, "_compile_and_store", lambda *a: pytest.fail("compiled again"))
    assert integrity.checksums(state) == on_host
    assert on_host[".step"] == 0 and len(set(np.asarray(list(on_host.values())))) > 2
