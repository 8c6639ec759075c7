import json

import pytest

from napari_litenext.cli import main


def _args(folders, *extra):
    return ["train", "--images", str(folders / "im"), "--masks", str(folders / "ma"), "--output",
            str(folders / "run"), "--epochs", "1", "--batch-size", "2", "--patch-size", "32", "--mode", "tile",
            "--no-srp", "--device", "cpu", *extra]


def test_train_writes_model_curves_and_history(folders, capsys):
    assert main(_args(folders, "--val-fraction", "0.25")) == 0
    run = folders / "run"
    assert {p.name for p in run.iterdir()} == {"best.pt", "last.pt", "history.csv", "curves.png"}
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "model: " in capsys.readouterr().out
    # the trained model segments through predict
    assert main(["predict", str(folders / "im" / "c0.png"), "-o", str(folders / "out"), "--model",
                 str(run / "best.pt"), "-q"]) == 0


def test_split_file_selects_train_and_val(folders):
    split = folders / "split.json"
    split.write_text(json.dumps({"train": ["c0", "c1", "c2"], "val": ["c3"]}))
    assert main(_args(folders, "--split", str(split))) == 0


@pytest.mark.parametrize("setup,extra,needle", [
    (lambda f: (f / "ma" / "c3_mask.png").unlink(), [], "c3.png: no mask"),
    (lambda f: None, ["--patch-size", "64"], "patch size 64 is larger"),
    (lambda f: None, ["--lr", "-1"], "learning rate must be positive"),
    (lambda f: None, ["--loss", "dice_bce", "--mwl-kernel", "5"], "only apply to the 'mwl' loss"),
])
def test_user_mistakes_are_one_line(folders, capsys, setup, extra, needle):
    setup(folders)
    assert main(_args(folders, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (folders / "run" / "best.pt").exists()


def test_existing_run_is_not_overwritten(folders, capsys):
    assert main(_args(folders)) == 0
    before = (folders / "run" / "best.pt").read_bytes()
    capsys.readouterr()
    assert main(_args(folders)) == 2
    assert "already holds best.pt" in capsys.readouterr().err
    assert (folders / "run" / "best.pt").read_bytes() == before


def test_changed_loss_weights_reach_the_loss_and_the_records(folders, monkeypatch):
    import napari_litenext.training.losses as losses
    from napari_litenext.network.checkpoint import load_checkpoint

    seen = []
    original = losses.margin_weight_map
    monkeypatch.setattr(losses, "margin_weight_map",
                        lambda mask, k, w_b, w_o, w_m: seen.append((k, w_b, w_o, w_m)) or original(mask, k, w_b, w_o, w_m))
    assert main(_args(folders, "--mwl-preset", "authors-code", "--mwl-weights", "2", "3", "9",
                      "--mwl-kernel", "5")) == 0
    assert seen and set(seen) == {(5, 2.0, 3.0, 9.0)}
    ckpt = load_checkpoint(folders / "run" / "best.pt")
    loss = ckpt.extra["train_config"]["loss"]
    assert (loss["preset"], loss["w_b"], loss["w_o"], loss["w_m"], loss["kernel_size"]) == ("authors-code", 2, 3, 9, 5)
    assert "w_b 2, w_o 3, w_m 9, kernel 5; authors-code preset, changed w_b, w_m, kernel_size" in ckpt.card.recipe


def test_fine_tuning_keeps_the_starting_models_input_scaling(folders):
    from napari_litenext.network.checkpoint import load_checkpoint

    assert main(_args(folders, "--normalisation", "percentile", "--threshold", "0.4", "--instances")) == 0
    start = folders / "run" / "best.pt"
    # no --mode, --patch-size or --normalisation: all three come from the starting model
    args = ["train", "--images", str(folders / "im"), "--masks", str(folders / "ma"), "--output",
            str(folders / "tuned"), "--epochs", "1", "--batch-size", "2", "--no-srp", "--device", "cpu",
            "--init", str(start)]
    assert main(args) == 0
    tuned = load_checkpoint(folders / "tuned" / "best.pt").inference
    assert (tuned.normalisation, tuned.mode, tuned.input_size, tuned.threshold, tuned.instances) == \
        ("percentile", "tile", 32, 0.4, True)


def test_robust_augment_flag_widens_the_augmentation():
    from napari_litenext.cli import build_parser
    from napari_litenext.cli.train import config_from_args
    from napari_litenext.training.config import ROBUST_AUGMENT

    base = ["train", "--images", "i", "--masks", "m", "--output", "o"]
    plain = config_from_args(build_parser().parse_args(base)).augment
    robust = config_from_args(build_parser().parse_args(base + ["--robust-augment"])).augment
    assert plain.stain == 0.0 and plain.invert == 0.0
    assert {k: getattr(robust, k) for k in ROBUST_AUGMENT} == ROBUST_AUGMENT
    with pytest.raises(SystemExit):
        build_parser().parse_args(base + ["--robust-augment", "--no-augment"])
