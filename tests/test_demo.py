"""The demo explains itself: sizes and plans, a quality/speed table with BM25, a plot or a note, one
search with titles, the next commands; no progress bars."""
import builtins
import importlib.util
import re

from retrieval.demo import run_demo


def test_demo_on_one_screen(tmp_path, tiny_model, capsys):
    report = run_demo(tmp_path / "demo", model=tiny_model, threads=1)
    err = capsys.readouterr().err
    assert "%|" not in err and "it/s" not in err  # no progress bars: one line per step
    assert [line[:5] for line in err.splitlines() if line.startswith("[")] == ["[1/3]", "[2/3]", "[3/3]"]
    assert "A SIZE names one" in report and "A PLAN chains sizes" in report
    table = [line for line in report.splitlines() if line.startswith("| ")][1:]
    assert any(line.startswith("| BM25 |") for line in table) and any("->" in line for line in table)
    speeds = [float(line.split("|")[4]) for line in table]
    assert speeds == sorted(speeds) and sum("*" in line.split("|")[5] for line in table) >= 1
    assert re.search(r"^1\. CACM-\d+  \S", report, re.M)  # a hit with its title
    assert "## Next" in report and "starbucks calibrate" in report
    if importlib.util.find_spec("matplotlib") is not None:  # the 'bench' extra; CI installs only 'test'
        assert "Plot saved to" in report and (tmp_path / "demo-frontier.png").is_file()
    else:
        assert "(no plot: matplotlib is not installed" in report
    again = run_demo(tmp_path / "demo", model=tiny_model, threads=1)  # reuses the index
    assert "reusing the CACM index" in capsys.readouterr().err and "## Next" in again


def test_demo_without_matplotlib_says_so_in_one_line(tmp_path, tiny_model, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    from retrieval import demo

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert demo.save_plot([], tmp_path / "x.png").startswith("(no plot: matplotlib is not installed")
    assert not (tmp_path / "x.png").exists()


def test_the_next_commands_name_the_bundled_topics_by_paths_that_work_from_the_working_folder(tmp_path, monkeypatch):
    from retrieval.demo import DEMO_DATA, next_commands

    def calibrate_paths() -> list[str]:
        line = next(line for line in next_commands(tmp_path / "idx").splitlines() if "starbucks calibrate" in line)
        words = line.split()
        return [words[words.index("--topics") + 1], words[words.index("--qrels") + 1]]

    monkeypatch.chdir(tmp_path)  # outside the repository: the bundled data's own path
    assert all((tmp_path / p).exists() for p in calibrate_paths())
    monkeypatch.chdir(DEMO_DATA.parents[1])  # inside it: short, relative
    assert calibrate_paths() == ["data/cacm", "data/cacm/qrels/test.tsv"]
