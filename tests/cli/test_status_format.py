"""`autocnnp status` prints the last epoch as the run printed it, not as raw JSON."""

from autocnnp.run_manage.jobs import format_epoch


def test_last_epoch_reads_like_the_progress_line():
    record = {"epoch": 3, "loss": 0.41234, "dice": 0.7, "val_loss": 0.5, "val_dice": 0.8012,
              "lr": 0.002, "time_s": 12.14, "train_s": 11.0, "images_per_s": 40.1,
              "wall": "2026-11-25T22:39:49+0000"}
    assert format_epoch(record, 30) == ("3/30  loss 0.412  dice 0.70  val_loss 0.5  "
                                        "val_dice 0.80  lr 2.0e-03  12.1s")
    assert format_epoch({"epoch": 2, "loss": None}, None) == "2  loss nan"
    assert format_epoch("unreadable last line of x", 3) == "unreadable last line of x"
