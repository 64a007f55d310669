"""testing.claim: a chapter's sentence checked against its run (FULL mode raises, QUICK reports)."""
import numpy as np
import pytest

from nnopt_lab.testing import ClaimFailed, claim, quick_mode


def test_a_true_claim_prints_a_tick_with_its_numbers(capsys):
    assert claim("the pruned model keeps its accuracy", 0.97 >= 0.96, quick=False, pruned=0.97, dense=0.96)
    assert capsys.readouterr().out.strip() == "✓ the pruned model keeps its accuracy  (pruned=0.97, dense=0.96)"


def test_a_false_claim_fails_a_full_run():
    with pytest.raises(ClaimFailed, match="✗ distillation helps"):
        claim("distillation helps", 0.90 > 0.91, quick=False, student=0.90, alone=0.91)


def test_a_false_claim_is_reported_in_quick_mode(capsys):
    assert claim("distillation helps", False, quick=True, student=0.5) is False
    out = capsys.readouterr().out
    assert out.startswith("✗ distillation helps") and "QUICK mode" in out


@pytest.mark.parametrize("quick", [True, False])
def test_a_claim_never_holds_on_nan(quick, capsys):
    if quick:
        assert claim("accuracy above 0.9", True, quick=True, acc=float("nan")) is False
    else:
        with pytest.raises(ClaimFailed):
            claim("accuracy above 0.9", True, quick=False, acc=np.float32("nan"))


def test_numbers_from_numpy_and_torch_are_accepted(capsys):
    torch = pytest.importorskip("torch")
    assert claim("ok", np.bool_(True), quick=False, a=np.float64(0.5), b=torch.tensor(2.0), c=np.int64(3))
    assert "(a=0.5, b=2, c=3)" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, error", [
    (dict(text="", condition=True), TypeError),
    (dict(text="ok", condition=np.array([True, False])), TypeError),
    (dict(text="ok", condition=True, quick="yes"), TypeError),
    (dict(text="ok", condition=True, a="0.9"), TypeError),
    (dict(text="ok", condition=True, a=np.ones(3)), TypeError),
])
def test_bad_arguments_name_themselves(kwargs, error):
    with pytest.raises(error):
        claim(**kwargs)


@pytest.mark.parametrize("value, quick", [("1", True), ("0", False), ("", False), ("true", True)])
def test_quick_mode_reads_the_environment(monkeypatch, value, quick):
    monkeypatch.setenv("QUICK", value)
    assert quick_mode() is quick
