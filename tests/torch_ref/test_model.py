"""The lecture's PyTorch model (torch_ref/model.py): its batches, its loop and its job."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the lecture's model needs PyTorch (pip install -e '.[torch]')")

from tests.torch_ref.conftest import _seed  # noqa: E402
from torch_ref.model import BigramLanguageModel, estimate_loss, get_batch, get_batch_tuned, train  # noqa: E402
from torch_ref.model import main as torch_ref_main  # noqa: E402


def test_lecture_batches_and_tuned_batches_agree():
    data = torch.randint(65, (500,))
    torch.manual_seed(_seed())
    state = torch.get_rng_state()
    x, y = get_batch(data, 32, 8, "cpu")
    torch.set_rng_state(state)
    xt, yt = get_batch_tuned(data, 32, 8, "cpu")
    assert x.shape == (32, 8) and torch.equal(x, xt) and torch.equal(y, yt)
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one


def test_lecture_loop_prints_and_restores_train_mode():
    data = torch.randint(11, (2000,))
    model = BigramLanguageModel(11)
    lines: list[str] = []
    history = train(model, data[:1800], data[1800:], max_iters=25, eval_interval=10, eval_iters=3, log=lines.append)
    assert [h[0] for h in history] == [0, 10, 20] and model.training
    assert lines[0].startswith("step 0: train loss ") and ", val loss " in lines[0]
    assert set(estimate_loss(model, {"train": data, "val": data}, 4, 8, "cpu", 2)) == {"train", "val"}
    out = model.generate(torch.zeros((3, 2), dtype=torch.long), 5)
    assert out.shape == (3, 7) and int(out.max()) < 11


def test_torch_ref_job_runs_like_the_lecture(shakespeare_path, capsys):
    rc = torch_ref_main(["--data", str(shakespeare_path), "--max-iters", "20", "--eval-interval", "10",
                         "--eval-iters", "2", "--sample-tokens", "40"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    first, second, sample = out.split("\n", 2)
    assert first.startswith("step 0: train loss 4.") and second.startswith("step 10: ")
    assert len(sample) == 41 + 1  # the context character, 40 sampled ones, print's newline


@pytest.mark.parametrize("argv", [["--bogus"], ["--max-iters", "x"], ["--batch-size", "0"], ["--device", "nope"],
                                  ["--data", "/nonexistent/input.txt"]])
def test_torch_ref_job_bad_input_is_one_line(argv, capsys):
    assert torch_ref_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("torch_ref.model: error: ")
