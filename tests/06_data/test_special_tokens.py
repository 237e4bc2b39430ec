"""BPETokenizer's special tokens (tiktoken's allowed/disallowed rules) and streaming encode_iterable."""

import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytorch.data import BPETokenizer, kjv_text

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer(special_tokens=[EOT, "<|end|>", EOT + EOT]).train(kjv_text()[:20_000], vocab_size=300)


def test_special_tokens_get_their_own_ids_after_the_merges(tok):
    assert tok.special_tokens == {EOT: 300, "<|end|>": 301, EOT + EOT: 302}
    assert tok.vocab_size == 303
    ids = tok.encode(f"the end{EOT}And<|end|>", allowed_special="all")
    assert ids[-1] == 301 and 300 in ids, "each special token is one id of its own"
    assert ids[:ids.index(300)] == tok.encode("the end"), "the text around a special token encodes as usual"
    assert tok.decode(ids) == f"the end{EOT}And<|end|>"
    assert tok.encode(EOT * 3, allowed_special="all") == [302, 300], "overlapping specials: the longest first"


def test_allowed_and_disallowed_like_tiktoken(tok):
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(f"a{EOT}b")  # by default every special token is disallowed
    assert tok.encode(f"a{EOT}", allowed_special={EOT}) == tok.encode("a") + [300]
    with pytest.raises(ValueError, match="<\\|end\\|>"):
        tok.encode(f"a{EOT}<|end|>", allowed_special={EOT})
    ordinary = tok.encode(f"a{EOT}", disallowed_special=())
    assert 300 not in ordinary and tok.decode(ordinary) == f"a{EOT}", "neither allowed nor disallowed: plain text"
    assert ordinary == tok.encode_ordinary(f"a{EOT}") == tok.encode("a") + tok.encode_ordinary(EOT), \
        "a special token that is neither allowed nor disallowed encodes as the plain text it is"
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="distinct"):
        BPETokenizer(special_tokens=["<|a|>", "<|a|>"])


def test_special_tokens_survive_save_and_load(tok, tmp_path):
    tok.save(tmp_path / "t.json")
    back = BPETokenizer.load(tmp_path / "t.json")
    assert back.special_tokens == tok.special_tokens
    text = f"In the beginning{EOT}God"
    assert back.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")


def test_encode_does_not_rebuild_the_special_token_regex(tok, monkeypatch):
    from tinytorch.data import tokenizers

    text = f"a{EOT}b<|end|>\nc"
    calls = [lambda: tok.encode("plain"), lambda: tok.encode(text, allowed_special="all"),
             lambda: tok.encode(text, allowed_special={EOT}, disallowed_special=()),
             lambda: list(tok.encode_iterable(text.splitlines(keepends=True), allowed_special="all"))]
    for call in calls:  # the first time may build each pattern
        call()
    compiled, compile = [], tokenizers._regex.compile
    monkeypatch.setattr(tokenizers._regex, "compile", lambda *args, **kw: compiled.append(args) or compile(*args, **kw))
    for call in calls:
        call()
    assert compiled == [], f"encode built its special-token regex again: {compiled}"


PIECES = ["In", " the", " beginning", "\n", "\n\n", "  ", " ", "\t", "x²", "'s", ",", "God", "<|end", "oftext|>",
          EOT, "\r\n", "12", " \n", "é"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=6).map("".join), max_size=8))
def test_encode_iterable_equals_encode_of_the_whole_text(chunks):
    tok = BPETokenizer([(32, 116), (256, 104)], special_tokens=[EOT])  # ' t', ' th'
    whole = "".join(chunks)
    assert list(tok.encode_iterable(chunks, allowed_special="all")) == tok.encode(whole, allowed_special="all")


def test_encode_iterable_streams_lines_of_a_file(tok, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(kjv_text()[:30_000], encoding="utf-8")
    with open(path, encoding="utf-8") as lines:
        streamed = tok.encode_iterable(lines)
        first = next(streamed)
        assert isinstance(first, int), "encode_iterable yields ids one by one"
        assert [first, *streamed] == tok.encode(path.read_text(encoding="utf-8"))


STREAM_UNDER_A_CAP = textwrap.dedent("""
    import itertools, random, resource, string, sys
    from tinytorch.data import BPETokenizer

    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=20)) for _ in range(64)]
    tok = BPETokenizer().train(" ".join(words), vocab_size=256 + 64 * 21)  # a word is a token or two: fast
    pool = [" ".join(rng.choices(words, k=12)) + "\\n" for _ in range(512)]

    def lines(n_bytes):  # ~n_bytes of text, made line by line, never held whole
        made = 0
        for line in itertools.cycle(pool):
            if made >= n_bytes:
                return
            made += len(line)
            yield line

    vm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize")][0]
    cap = vm + 48 * 2**20  # 48 MiB above what the interpreter already maps
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    if sys.argv[1] == "stream":
        print(sum(1 for _ in tok.encode_iterable(lines(20 * 2**20))))
    else:  # the control: the same text encoded whole does not fit under the cap
        print(len(tok.encode("".join(lines(20 * 2**20)))))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status are Linux's")
def test_encode_iterable_memory_stays_bounded():
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}

    def run(mode):
        return subprocess.run([sys.executable, "-c", STREAM_UNDER_A_CAP, mode], capture_output=True, text=True,
                              env=env, timeout=120)
    streamed = run("stream")
    assert streamed.returncode == 0, f"streaming 20 MB under a 48 MiB cap failed:\n{streamed.stderr[-2000:]}"
    assert int(streamed.stdout) > 1_000_000, "20 MB of text is more than a million tokens"
    whole = run("whole")
    assert whole.returncode != 0 and "MemoryError" in whole.stderr, \
        "the control (encoding the text whole) must not fit under the cap, or the cap proves nothing"
