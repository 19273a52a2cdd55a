"""Stage 4's between-epoch writes (cvasr.training.checkpoints): when a checkpoint is due, which
epoch model files exist, that a checkpoint on disk always has the epoch files it names, and the
snapshot and writer process that write them (cvasr.training.snapshot, .writer_process)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from cvasr.training.checkpoints import EpochWriter, nbest_epochs
from cvasr.training.snapshot import Slot, Snapshot, map_leaves
from cvasr.training.validation import has_validated, sort_validated_epochs, validates
from cvasr.training import writer_process
from cvasr.training.writer_process import WriterProcess

CRITERIA = [["valid", "cer_ctc", "min"]]


def reporter_state(cers: list[float]) -> dict:
    """espnet2's Reporter.state_dict() after len(cers) epochs of these validation CERs."""
    return {"epoch": len(cers),
            "stats": {e: {"valid": {"cer_ctc": c}, "train": {"loss": 1.0}}
                      for e, c in enumerate(cers, start=1)}}


def test_nbest_epochs_is_espnet2s_choice() -> None:
    state = reporter_state([0.9, 0.5, 0.7, 0.4, 0.8])
    assert nbest_epochs(state, CRITERIA, 2) == {4, 2}
    assert nbest_epochs(state, [["valid", "acc", "max"]], 2) == set()  # not reported: ignored


@pytest.mark.parametrize("mode", ["min", "max"])
def test_validated_ranking_is_espnet2s_where_every_epoch_validated(mode: str) -> None:
    from espnet2.train.reporter import Reporter

    reporter = Reporter()
    reporter.load_state_dict(reporter_state([0.9, 0.5, 0.7, 0.5, 0.8]))  # a tie: epoch order
    assert sort_validated_epochs(reporter, "valid", "cer_ctc", mode) == \
        reporter.sort_epochs_and_values("valid", "cer_ctc", mode)


def test_epochs_without_validation_are_left_out_of_the_n_best() -> None:
    from espnet2.train.reporter import Reporter

    state = reporter_state([0.9, 0.5, 0.7, 0.4, 0.8])
    for epoch in (2, 5):  # not validated: espnet2 keeps only the time of its [valid] phase
        state["stats"][epoch]["valid"] = {"time": 1.0, "total_count": 3}
    assert nbest_epochs(state, CRITERIA, 2) == {4, 3}  # at epoch 5, which has no value itself
    reporter = Reporter()
    reporter.load_state_dict(state)
    assert sort_validated_epochs(reporter, "valid", "cer_ctc", "min") == [(4, 0.4), (3, 0.7),
                                                                          (1, 0.9)]
    assert has_validated(reporter, "valid", "cer_ctc") and not reporter.has("valid", "cer_ctc")
    assert not has_validated(reporter, "valid", "cer_ctc", epoch=5)
    with pytest.raises(KeyError, match="valid.acc is not found"):
        sort_validated_epochs(reporter, "valid", "acc", "min")


@pytest.mark.parametrize("every, max_epoch, validated", [
    (1, 4, [1, 2, 3, 4]), (0, 3, [1, 2, 3]), (3, 7, [3, 6, 7]), (5, 10, [5, 10]), (5, 4, [4])])
def test_which_epochs_validate(every: int, max_epoch: int, validated: list[int]) -> None:
    assert [e for e in range(1, max_epoch + 1) if validates(e, every, max_epoch)] == validated


@pytest.mark.parametrize("minutes, epochs, due", [
    (0.0, 0, [1, 2, 3, 4, 5, 6]),  # espnet2's way: every epoch
    (0.0, 2, [2, 4, 6]),
    (60.0, 0, [6]),  # an hour: only the last epoch (6 is max_epoch)
    (60.0, 4, [4, 6]),
])
def test_checkpoint_due(minutes: float, epochs: int, due: list[int], tmp_path: Path) -> None:
    writer = EpochWriter(tmp_path, max_epoch=6, criteria=CRITERIA, keep_nbest=2,
                         every_minutes=minutes, every_epochs=epochs, background=False)
    assert [e for e in range(1, 7) if writer.checkpoint_due(e)] == due


@pytest.mark.parametrize("background", [False, True])
def test_epoch_files_follow_the_nbest_and_the_checkpoints(tmp_path: Path,
                                                          background: bool) -> None:
    cers = [0.9, 0.5, 0.7, 0.4, 0.8, 0.6]
    writer = EpochWriter(tmp_path, max_epoch=6, criteria=CRITERIA, keep_nbest=2,
                         every_epochs=3, background=background,
                         rng_states=lambda: {"seed": 7}, rng_key="rng")
    on_disk = {}
    for epoch in range(1, 7):
        weights = {"w": torch.full((3,), float(epoch))}
        # espnet2's order: checkpoint.pth, then {epoch}epoch.pth, then it removes the epoch
        # files that left the n best
        writer.on_checkpoint({"model": weights, "reporter": reporter_state(cers[:epoch])})
        weights["w"] += 100  # training goes on: what was handed over must not change
        writer.on_epoch_model(epoch, {"w": torch.full((3,), float(epoch))})
        writer.wait()
        wanted = nbest_epochs(reporter_state(cers[:epoch]), CRITERIA, 2)
        for e in range(1, epoch):
            if e not in wanted:
                (tmp_path / f"{e}epoch.pth").unlink(missing_ok=True)
        on_disk[epoch] = sorted(int(p.name.split("epoch")[0]) for p in tmp_path.glob("*epoch.pth"))
        if (tmp_path / "checkpoint.pth").exists():
            state = torch.load(tmp_path / "checkpoint.pth", weights_only=False)
            # the checkpoint's n best are on disk with it, whatever espnet2 deleted since
            named = nbest_epochs(state["reporter"], CRITERIA, 2)
            kept = {int(p.name.split("epoch")[0]) for p in (tmp_path / "checkpoint_models").iterdir()}
            assert named <= kept, (epoch, named, kept)
    writer.flush()
    writer.close()
    assert on_disk == {1: [], 2: [], 3: [2, 3], 4: [2], 5: [2], 6: [2, 4, 6]}
    state = torch.load(tmp_path / "checkpoint.pth", weights_only=False)
    assert state["reporter"]["epoch"] == 6 and state["rng"] == {"seed": 7}
    assert torch.equal(state["model"]["w"], torch.full((3,), 6.0))  # the copy, not the +100
    assert torch.equal(torch.load(tmp_path / "4epoch.pth")["w"], torch.full((3,), 4.0))
    assert writer.checkpoints_written == 2 and not list(tmp_path.glob("*.partial"))
    assert sorted(p.name for p in (tmp_path / "checkpoint_models").iterdir()) == [
        "2epoch.pth", "4epoch.pth", "6epoch.pth"]
    assert (tmp_path / "4epoch.pth").stat().st_ino == \
        (tmp_path / "checkpoint_models" / "4epoch.pth").stat().st_ino  # a link, not a copy

    # a resumed run gets the checkpoint's epoch models back where espnet2 reads them
    for name in ("2epoch.pth", "4epoch.pth"):
        (tmp_path / name).unlink()
    again = EpochWriter(tmp_path, max_epoch=8, criteria=CRITERIA, keep_nbest=2,
                        background=False)
    assert again.restore() == [2, 4]
    assert torch.equal(torch.load(tmp_path / "2epoch.pth")["w"], torch.full((3,), 2.0))


def sample_state() -> dict:
    """A state of the kinds a checkpoint holds: tensors of several dtypes and shapes (0-d,
    empty, not contiguous), nested in dicts, lists and tuples, beside plain values."""
    torch.manual_seed(0)
    return {"model": {"w": torch.randn(5, 7), "w_t": torch.randn(7, 5).t(),
                      "half": torch.randn(3).half(), "count": torch.arange(4),
                      "empty": torch.zeros(0, 3)},
            "optimizers": [{"state": {0: {"step": torch.tensor(12.0)}}, "lr": 3e-4}],
            "rng": (7, [1.5, "mt"], torch.ByteTensor([1, 2, 3]), torch.tensor([True, False])),
            "reporter": {"epoch": 3}}


def assert_same_state(got, want) -> None:
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype
        assert got.shape == want.shape and torch.equal(got, want)
    elif isinstance(want, dict):
        assert list(got) == list(want)
        for k in want:
            assert_same_state(got[k], want[k])
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_same_state(g, w)
    else:
        assert got == want


def test_snapshot_copies_every_tensor_into_one_buffer_and_back() -> None:
    state = sample_state()
    before = sample_state()
    snapshot = Snapshot.take(state)
    assert len(snapshot.buffers) == 1 and snapshot.buffers[0].dtype == torch.uint8
    assert snapshot.buffers[0].numel() == sum(t.numel() * t.element_size() for t in
                                  [*state["model"].values(),
                                   state["optimizers"][0]["state"][0]["step"],
                                   state["rng"][2], state["rng"][3]])
    for t in state["model"].values():  # training goes on: the snapshot must not change
        t.add_(1)
    views = map_leaves(snapshot.skeleton, Slot, snapshot.tensor)  # no copy
    assert_same_state(views, before)
    assert views["model"]["w"].untyped_storage().data_ptr() == \
        snapshot.buffers[0].untyped_storage().data_ptr()
    own = snapshot.materialise()
    assert_same_state(own, before)
    for t in own["model"].values():  # each its own storage, as torch.save would write it
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


def test_writer_process_writes_what_torch_save_writes(tmp_path: Path) -> None:
    state = sample_state()
    writer = WriterProcess()
    try:
        writer.save(Snapshot.take(state), tmp_path / "checkpoint.pth")
        assert writer.pid != os.getpid() and writer._process.poll() is None
        writer.save(Snapshot.take({"again": torch.ones(2)}), tmp_path / "second.pth")
        with pytest.raises(RuntimeError, match="failed to write .*missing/x.pth(.|\n)*"
                                               "No such file or directory"):
            writer.save(Snapshot.take(state), tmp_path / "missing" / "x.pth")
    finally:
        code = writer.close()
    assert code == 0
    assert_same_state(torch.load(tmp_path / "checkpoint.pth", weights_only=False),
                      sample_state())
    assert torch.equal(torch.load(tmp_path / "second.pth")["again"], torch.ones(2))
    assert not list(tmp_path.glob("*.partial"))


def test_a_dead_writer_process_leaves_the_writes_to_the_training_process(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = EpochWriter(tmp_path, max_epoch=3, criteria=CRITERIA, keep_nbest=1)
    for epoch in range(1, 4):
        if epoch == 2:  # killed between two checkpoints (say, by the OOM killer)
            os.kill(writer._process.pid, signal.SIGKILL)
        writer.on_checkpoint({"model": {"w": torch.full((2,), float(epoch))},
                              "reporter": reporter_state([0.5] * epoch)})
        writer.on_epoch_model(epoch, {"w": torch.full((2,), float(epoch))})
        writer.wait()
        state = torch.load(tmp_path / "checkpoint.pth", weights_only=False)
        assert torch.equal(state["model"]["w"], torch.full((2,), float(epoch)))
        assert (writer._process is None) == (epoch >= 2)
    writer.close()
    assert "not handed to the checkpoint writer process" in caplog.text or \
        "died writing" in caplog.text
    assert "this process writes the checkpoints from now on" in caplog.text


def test_a_synced_save_loads_as_torch_saves(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_process, "SYNC_EVERY_BYTES", 1024)  # synced many times
    state = sample_state()
    state["big"] = torch.randn(64, 64)  # 16 KiB
    writer_process.save_synced(state, tmp_path / "synced.pth")
    assert_same_state(torch.load(tmp_path / "synced.pth", weights_only=False), state)
    assert [p.name for p in tmp_path.iterdir()] == ["synced.pth"]


def test_release_file_frees_only_a_last_name(tmp_path: Path) -> None:
    alone, shared, other = tmp_path / "alone", tmp_path / "shared", tmp_path / "other"
    alone.write_bytes(b"a" * 5000)
    shared.write_bytes(b"s" * 5000)
    os.link(shared, other)
    writer_process.release_file(alone)
    writer_process.release_file(shared)  # `other` still names it: its data stays
    writer_process.release_file(tmp_path / "missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]
    assert other.read_bytes() == b"s" * 5000


def test_a_save_over_a_file_releases_it_and_any_leftover(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_process, "SYNC_EVERY_BYTES", 1024)  # released in pieces
    path = tmp_path / "checkpoint.pth"
    writer_process.save_synced({"w": torch.zeros(4096)}, path)
    link = tmp_path / "kept.pth"
    os.link(path, link)  # as checkpoint_models/ and {epoch}epoch.pth share a file
    (tmp_path / "checkpoint.pth.replaced").write_bytes(b"left by a kill")
    writer_process.save_synced({"w": torch.ones(4096)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth", "kept.pth"]
    assert torch.equal(torch.load(path)["w"], torch.ones(4096))
    assert torch.equal(torch.load(link)["w"], torch.zeros(4096))  # the replaced file, whole
