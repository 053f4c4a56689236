"""tools/host_report.py's loss curve over the pre-training stages: a later stage's steps continue the earlier's."""
from tests.dist.common import load_tool


def test_stages_are_laid_end_to_end(tmp_path):
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    one.write_text("".join(f"12:00:00 INFO step {s}/100 loss {1.0 / s:.4f} (ori 0)\n" for s in (25, 50, 75, 100))
                   + "12:00:00 INFO step 50/100 loss 0.0200 (ori 0)\n")  # resumed: step 50 logged twice
    two.write_text("".join(f"12:00:00 INFO step {s}/40 loss 0.0100\n" for s in (20, 40)))
    out = load_tool("host_report").loss_curve([str(one), str(two)], str(tmp_path / "loss.png"))
    assert out["stage_starts"] == [0, 100] and out["first_steps"] == 25 and out["last_step"] == 140
    assert abs(out["loss_end"] - (1 / 25 + 0.02 + 1 / 50 + 1 / 75 + 1 / 100 + 0.01 + 0.01) / 7) < 1e-3
    assert (tmp_path / "loss.png").stat().st_size > 1000
