import pytest

from retrieval.plan import Plan, Stage
from starbucks.sizes import Size, diagonal, parse_sizes


def test_size_parse_and_str():
    assert Size.parse("6x384") == Size(6, 384)
    assert str(Size(2, 32)) == "2x32"
    assert parse_sizes("4x64, 2x32,4x64") == [Size(2, 32), Size(4, 64)]
    for bad in ("6", "x32", "0x32", "2x-1", "axb"):
        with pytest.raises(ValueError):
            Size.parse(bad)


def test_diagonal_matches_the_paper_and_scales():
    assert diagonal(12, 768) == [Size(2, 32), Size(4, 64), Size(6, 128), Size(8, 256), Size(10, 512), Size(12, 768)]
    assert diagonal(6, 384) == [Size(1, 16), Size(2, 32), Size(3, 64), Size(4, 128), Size(5, 256), Size(6, 384)]


def test_plan_parse_round_trip():
    plan = Plan.parse("2x32:1000,4x64:200,6x384:10")
    assert plan == Plan([Stage(Size(2, 32), 1000), Stage(Size(4, 64), 200), Stage(Size(6, 384), 10)])
    assert str(plan) == "2x32:1000,4x64:200,6x384:10"
    assert plan.depth == 1000 and plan.sizes == [Size(2, 32), Size(4, 64), Size(6, 384)]


@pytest.mark.parametrize("text", ["", "2x32", "2x32:abc", "2x32:0", "2x32:10,6x384:20"])
def test_plan_rejects_bad_text(text):
    with pytest.raises(ValueError):
        Plan.parse(text)
