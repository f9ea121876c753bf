"""Dataclasses from mappings: keys, types and names checked, each error naming where."""

from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from analysis_lib.core.errors import ConfigError, DataError
from analysis_lib.core.fields import DataSetName, Names, RunName, build, check_keys


@dataclass(frozen=True)
class _Inner:
    run: RunName
    weight: float = 1.0


@dataclass(frozen=True)
class _Outer:
    sizes: tuple[int, ...]
    runs: Mapping[int, RunName]
    data: DataSetName | None
    inner: tuple[_Inner, ...] = ()


NAMES = Names(runs=("main", "tuned"), data_sets=("sim3d_64_ci",))


def test_build_converts_lists_mappings_nested_dataclasses_and_ints_to_floats():
    got = build(_Outer, {"sizes": [64, 128], "runs": {64: "main"}, "data": None,
                         "inner": [{"run": "tuned", "weight": 2}]}, "t", NAMES)
    assert got == _Outer((64, 128), {64: "main"}, None, (_Inner("tuned", 2.0),))
    assert isinstance(got.inner[0].weight, float)


@pytest.mark.parametrize(
    ("raw", "message"),
    [({"sizes": [1], "runs": {}, "data": None, "innr": []}, "t: unknown key 'innr'; did you mean "
                                                            "'inner'"),
     ({"sizes": [1], "runs": {}}, "t sets no data"),
     ({"sizes": 64, "runs": {}, "data": None}, r"t.sizes: expected a list, got 64"),
     ({"sizes": [True], "runs": {}, "data": None}, r"t.sizes\[0\]: expected int, got True"),
     ({"sizes": [1], "runs": {"64": "main"}, "data": None}, "t.runs key: expected int, got '64'"),
     ({"sizes": [1], "runs": {64: "mian"}, "data": None}, r"t.runs\[64\]: no run 'mian'; did you "
                                                          "mean 'main'"),
     ({"sizes": [1], "runs": {}, "data": "sim3d_64"}, "t.data: no data set 'sim3d_64'; did you "
                                                      "mean 'sim3d_64_ci'"),
     ({"sizes": [1], "runs": {}, "data": None, "inner": [{"weight": 1}]}, r"t.inner\[0\] sets no "
                                                                         "run")],
)
def test_build_names_the_bad_key_or_value(raw, message):
    with pytest.raises(ConfigError, match=message):
        build(_Outer, raw, "t", NAMES)


def test_any_name_passes_without_a_list_of_names():
    assert build(_Inner, {"run": "anything"}, "t").run == "anything"


def test_check_keys_raises_the_error_type_asked_for():
    with pytest.raises(DataError, match="record: unknown key 'runn'"):
        check_keys(_Inner, {"runn": "x"}, "record", DataError)
    with pytest.raises(DataError, match="record: expected a mapping"):
        check_keys(_Inner, ["run"], "record", DataError)
