"""trials.db's read-only API: no lock (so it works while the driver holds the store), one
snapshot of trials and recorded state, writes refused, one-line errors for what is not a store."""

import pytest

from fastlab.sweep.store import StoreError, TrialStore, count_finished, read_sweep


def test_a_reader_sees_the_trials_and_state_while_the_driver_holds_the_store(tmp_path) -> None:
    db = tmp_path / "trials.db"
    assert count_finished(db) == 0  # no store yet: nothing finished
    with TrialStore(db) as driver:  # holds the driver's lock throughout
        driver.set("direction", "minimize")
        driver.set("space", '{"dims": [], "fixed": ["a=1"]}')
        driver.start([(0, {"x": 0.5}, "0"), (1, {"x": 0.7}, "1")], next_job=2)
        driver.finish(0, "completed", 1.5, {"objective_name": "rmse"}, "0", None)
        record = read_sweep(db)
        assert [(t.number, t.status, t.value) for t in record.trials] == [
            (0, "completed", 1.5), (1, "running", None)]
        assert record.trials[1].params == {"x": 0.7}
        assert record.trials[0].metrics == {"objective_name": "rmse"}
        assert record.direction == "minimize" and record.state["next_job"] == 2
        assert record.space == {"dims": [], "fixed": ["a=1"]}
        assert count_finished(db) == 1
        with TrialStore.open_readonly(db) as reader:
            with pytest.raises(StoreError, match="read-only"):
                reader.set("direction", "maximize")
            with pytest.raises(StoreError, match="read-only"):
                reader.finish(1, "failed", None, None, None, "x")
        driver.finish(1, "failed", None, None, "1", "boom")  # the driver still writes
    assert count_finished(db) == 2


def test_what_is_not_a_store_is_one_line(tmp_path) -> None:
    with pytest.raises(StoreError, match=r"does not exist: pass a sweep dir"):
        read_sweep(tmp_path / "trials.db")
    (tmp_path / "trials.db").write_text("not sqlite at all, but long enough to be looked at" * 40)
    with pytest.raises(StoreError, match=r"cannot be read as a fastlab trials store") as e:
        read_sweep(tmp_path / "trials.db")
    assert "\n" not in str(e.value)
    assert not (tmp_path / ".trials.db.lock").exists()  # a reader never takes the lock
