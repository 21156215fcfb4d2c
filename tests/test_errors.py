import pickle

import pytest

from vision.errors import DataError


def test_data_error_names_the_file_first():
    err = DataError("/data/room_1.ply", "point count 10 != label count 9")
    assert isinstance(err, ValueError)
    assert str(err) == "/data/room_1.ply: point count 10 != label count 9"
    assert err.path == "/data/room_1.ply" and err.reason == "point count 10 != label count 9"


def test_data_error_survives_pickling_between_workers():
    err = pickle.loads(pickle.dumps(DataError("a.las", "truncated")))
    assert (err.path, err.reason, str(err)) == ("a.las", "truncated", "a.las: truncated")


def test_data_error_accepts_path_objects(tmp_path):
    with pytest.raises(DataError, match=r"^.*x\.npz: empty"):
        raise DataError(tmp_path / "x.npz", "empty")
