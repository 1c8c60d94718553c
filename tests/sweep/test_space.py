"""Search-space parsing: every form of Hydra's override grammar the sweeper takes, and the ones
it refuses with a message."""

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Quote, QuotedString

from fastlab.sweep import hydra_private
from fastlab.sweep.errors import SweepError
from fastlab.sweep.hydra_private import written
from fastlab.sweep.space import Discrete, Interval, SearchSpace, parse_space

# (override, the dimension it must parse to)
FORMS = [
    ("a=choice(1,2.5,x)", Discrete("a", "a", "choice", (1, 2.5, "x"), ("1", "2.5", "x"))),
    ("a=1,2,3", Discrete("a", "a", "choice", (1, 2, 3), ("1", "2", "3"))),
    ("a=choice('x y',true)", Discrete("a", "a", "choice", ("x y", True), ("x\\ y", "True"))),
    ("a=choice([1,2],[3])", Discrete("a", "a", "choice", ([1, 2], [3]), ("[1,2]", "[3]"))),
    ("a=sort(choice(3,1,2))", Discrete("a", "a", "choice", (1, 2, 3), ("1", "2", "3"))),
    ("+a=choice(1,2)", Discrete("a", "+a", "choice", (1, 2), ("1", "2"))),
    (
        "arch=choice(cnn,resnet18)",
        Discrete("arch", "arch", "choice", ("cnn", "resnet18"), ("cnn", "resnet18")),
    ),
    ("a=range(1,5)", Discrete("a", "a", "range", (1, 2, 3, 4), ("1", "2", "3", "4"))),
    ("a=range(3)", Discrete("a", "a", "range", (0, 1, 2), ("0", "1", "2"))),
    (
        "a=range(0,1,0.25)",
        Discrete("a", "a", "range", (0.0, 0.25, 0.5, 0.75), ("0.0", "0.25", "0.5", "0.75")),
    ),
    ("a=interval(0,1)", Interval("a", "a", 0.0, 1.0)),
    ("a=interval(-2.5,3)", Interval("a", "a", -2.5, 3.0)),
    ("a=int(interval(1,10))", Interval("a", "a", 1, 10, integer=True)),
    ("a=tag(log,interval(1e-4,1e-1))", Interval("a", "a", 1e-4, 1e-1, log=True)),
    ("a=tag(log, int(interval(16, 256)))", Interval("a", "a", 16, 256, log=True, integer=True)),
    ("a=int(tag(log,interval(1,100)))", Interval("a", "a", 1, 100, log=True, integer=True)),
]


@pytest.mark.parametrize("line, expected", FORMS, ids=[f for f, _ in FORMS])
def test_each_form_parses_to_its_dimension(line: str, expected) -> None:
    space = parse_space(None, [line])
    assert space.dims == (expected,)
    assert space.fixed == ()


@pytest.mark.parametrize("line", ["a=3", "a=x", "+b=1", "++c=[1,2]", "~d", "arch=cnn", "a='1,2'"])
def test_plain_values_pass_through_unchanged(line: str) -> None:
    space = parse_space(None, [line])
    assert space.dims == ()
    assert space.fixed == (line,)
    assert space.overrides({}) == [line]


# (override, words the message must contain)
UNSUPPORTED = [
    ("a=shuffle(choice(1,2))", "shuffle"),
    ("a=shuffle(range(1,4))", "shuffle"),
    ("a=tag(foo,interval(0,1))", "tag foo"),
    ("a=tag(log,choice(1,2))", "only to interval"),
    ("a=tag(log,interval(0,1))", "positive lower bound"),
    ("a=interval(2,1)", "a < b"),
    ("a=range(5,1)", "no values"),
    ("a=glob(*)", "choice(...)"),
    ("hydra.x=1,2", "hydra.* settings"),
]


@pytest.mark.parametrize("line, words", UNSUPPORTED, ids=[f for f, _ in UNSUPPORTED])
def test_unsupported_forms_fail_with_one_line_naming_them(line: str, words: str) -> None:
    with pytest.raises(SweepError) as info:
        parse_space(None, [line])
    message = str(info.value)
    assert words in message
    assert repr(line) in message  # names where the bad form came from
    assert "\n" not in message


def test_unparsable_config_value_names_the_config_key() -> None:
    with pytest.raises(SweepError, match=r"hydra\.sweeper\.params\.lr: cannot parse"):
        parse_space({"lr": "interval(1,"}, [])


def test_command_line_wins_over_config_params() -> None:
    space = parse_space(
        {"a": "choice(1,2)", "b": "interval(0,1)", "c": 5, "d": "x,y"},
        ["b=tag(log,interval(1,10))", "+c=7", "e=3"],
    )
    assert [d.name for d in space.dims] == ["a", "b", "d"]  # config order kept
    assert space.dims[1] == Interval("b", "b", 1.0, 10.0, log=True)
    assert space.fixed == ("+c=7", "e=3")


def test_nested_config_params_mean_dotted_keys() -> None:
    space = parse_space({"schedule": {"lr_max": "interval(0.1,1)", "epochs": 2}}, [])
    assert space.dims == (Interval("schedule.lr_max", "schedule.lr_max", 0.1, 1.0),)
    assert space.fixed == ("schedule.epochs=2",)


def test_config_values_typed_by_yaml_become_override_text() -> None:
    space = parse_space({"n": 3, "f": 0.5, "flag": True, "lst": [1, 2], "none": None}, [])
    assert space.fixed == ("n=3", "f=0.5", "flag=True", "lst=[1,2]", "none=null")


def test_units_round_trip_and_stay_in_bounds() -> None:
    space = parse_space(
        None,
        [
            "c=choice(a,b,c)",
            "r=range(0,10,2)",
            "x=interval(-1,1)",
            "n=int(interval(1,4))",
            "lr=tag(log,interval(1e-5,1))",
            "bs=tag(log,int(interval(8,512)))",
        ],
    )
    for u in [0.0, 0.1, 0.5, 0.77, 0.999999]:
        params = space.from_unit([u] * len(space.dims))
        assert params["c"] in ("a", "b", "c")
        assert params["r"] in (0, 2, 4, 6, 8)
        assert -1 <= params["x"] <= 1
        assert params["n"] in (1, 2, 3, 4) and isinstance(params["n"], int)
        assert 1e-5 <= params["lr"] <= 1
        assert 8 <= params["bs"] <= 512 and isinstance(params["bs"], int)
        assert space.from_unit(space.to_unit(params)) == params
    # the log scale spends as much of the cube on 1e-5..1e-4 as on 0.1..1
    assert space.dims[4].from_unit(0.2) == pytest.approx(1e-4, rel=1e-5)
    # integer intervals give the top value a full cell
    assert [space.dims[3].from_unit(u) for u in (0.0, 0.26, 0.51, 0.76, 0.99)] == [1, 2, 3, 4, 4]


def test_overrides_render_values_the_grammar_reads_back() -> None:
    space = parse_space(None, ["+s=choice('x y',z)", "lr=tag(log,interval(1e-6,1))", "fixed=1"])
    overrides = space.overrides({"s": "x y", "lr": 1.5e-6})
    assert overrides == ["+s=x\\ y", "lr=1.5e-06", "fixed=1"]  # the command line's order
    reparsed = parse_space(None, overrides)
    assert reparsed.fixed == tuple(overrides)
    assert [o.value() for o in map(_parse, overrides)] == ["x y", 1.5e-6, 1]


def test_fingerprint_changes_with_the_space_and_fixed_values() -> None:
    base = parse_space(None, ["a=1,2", "b=interval(0,1)", "e=1"]).fingerprint()
    assert parse_space(None, ["e=1", "a=1,2", "b=interval(0,1)"]).fingerprint() == base
    assert parse_space(None, ["b=interval(0,1)", "a=1,2", "e=1"]).fingerprint() != base
    assert parse_space(None, ["a=1,2", "b=interval(0,2)", "e=1"]).fingerprint() != base
    assert parse_space(None, ["a=1,2", "b=interval(0,1)", "e=2"]).fingerprint() != base
    assert parse_space(None, ["a=1,2", "b=interval(0,1)", "e=1"]).fingerprint() == base
    assert parse_space(None, ["a=1,3", "b=interval(0,1)", "e=1"]).fingerprint() != base
    assert SearchSpace(()).fingerprint() != base


def _parse(line: str):
    return OverridesParser.create().parse_override(line)


# Values a space may have to write as override text: escapes, quotes, nesting, every scalar type.
TEXTS = ["x y", "a=b", "f(1)", "[x]", "{k}", "a:b", "c,d", "tab\there", "back\\slash", "\\(", "", "plain",
         1, -3, 2.5, 1e-05, float("inf"), True, False, None, [1, "a b", [None]], {"k": "v:w", "n": {"m": 1.5}},
         QuotedString(text="it's", quote=Quote.single), QuotedString(text='say "hi" \\', quote=Quote.double)]


@pytest.mark.parametrize("value", TEXTS, ids=[repr(v) for v in TEXTS])
def test_fastlab_writes_override_text_as_hydra_does(value) -> None:
    # The public path when Hydra's private writer fails its check (fastlab.sweep.hydra_private).
    assert written(value) == Override._get_value_element_as_str(value)


def test_every_form_parses_alike_without_hydras_private_writer(monkeypatch) -> None:
    expected = [parse_space(None, [line]).dims for line, _ in FORMS]
    typed = parse_space({"n": 3, "f": 0.5, "flag": True, "lst": [1, "a b"], "none": None}, []).fixed
    hydra_private.forget()
    monkeypatch.delattr(Override, "_get_value_element_as_str")
    try:
        assert [parse_space(None, [line]).dims for line, _ in FORMS] == expected
        assert parse_space({"n": 3, "f": 0.5, "flag": True, "lst": [1, "a b"], "none": None}, []).fixed == typed
        assert not hydra_private.fit(hydra_private.TEXT)
    finally:
        monkeypatch.undo()
        hydra_private.forget()
