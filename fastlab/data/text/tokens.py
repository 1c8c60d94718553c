"""Text to token ids: fast.ai's tokenisation rules, a frequency vocabulary, and back to text.

Pure functions. ``tokenize`` marks what lowercasing would lose with special tokens, as fastai's
``defaults.text_proc_rules`` do (spaCy is not used; a regex splits words, clitics and
punctuation)::

    "Hello WORLD!!!!  no no no no"
    -> ['xxbos', 'xxmaj', 'hello', 'xxup', 'world', 'xxrep', '4', '!', 'xxwrep', '4', 'no']
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable, Sequence

UNK, PAD, BOS = "xxunk", "xxpad", "xxbos"
REP, WREP = "xxrep", "xxwrep"  # xxrep n c: character c repeated n times; xxwrep n w: word w n times
UP, MAJ = "xxup", "xxmaj"  # the next word was ALL CAPS / Capitalised before lowercasing
SPECIALS = [UNK, PAD, BOS, REP, WREP, UP, MAJ]  # ids 0.. in every vocab: xxunk is 0, xxpad is 1
UNK_ID, PAD_ID, BOS_ID = 0, 1, 2

# Three or more of the same non-space character ("!!!!", "----"): fastai's replace_rep.
_RE_REP = re.compile(r"(\S)(\1{2,})")
# The same word three or more times in a row: fastai's replace_wrep.
_RE_WREP = re.compile(r"(?:\s|^)(\w+)\s+((?:\1\s+)+)\1(\s|\W|$)")
_RE_BR = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)
_RE_SPACES = re.compile(r"[ \t]{2,}")
# Special tokens kept whole; English clitics split off as spaCy does ("don't" -> do n't,
# "it's" -> it 's); then words (letters, digits, underscore) and single punctuation marks.
_RE_TOKEN = re.compile(r"xxrep|xxwrep|\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\w+|[^\w\s]", re.IGNORECASE)


def _replace_rep(text: str) -> str:
    return _RE_REP.sub(lambda m: f" {REP} {len(m.group(2)) + 1} {m.group(1)} ", text)


def _replace_wrep(text: str) -> str:
    def sub(m: re.Match) -> str:
        word, repeats, end = m.groups()
        return f" {WREP} {len(repeats.split()) + 2} {word} {end}"

    return _RE_WREP.sub(sub, text)


def _mark_case(tokens: Iterable[str]) -> list[str]:
    """``xxup`` before ALL-CAPS words, ``xxmaj`` before Capitalised ones, then lowercase all
    (fastai's replace_all_caps and replace_maj; one-letter words like "I" get no mark)."""
    out: list[str] = []
    for t in tokens:
        if t in (REP, WREP):
            out.append(t)
            continue
        if len(t) > 1 and t.isupper():
            out.append(UP)
        elif len(t) > 1 and t[0].isupper() and t[1:].islower():
            out.append(MAJ)
        out.append(t.lower())
    return out


def tokenize(text: str) -> list[str]:
    """One text -> tokens, starting with ``xxbos``; see the module docstring for the rules."""
    text = html.unescape(_RE_BR.sub("\n", text))
    text = _replace_wrep(_replace_rep(text))
    text = _RE_SPACES.sub(" ", text)
    return [BOS, *_mark_case(_RE_TOKEN.findall(text))]


def make_vocab(docs: Iterable[Sequence[str]], min_freq: int = 2, max_vocab: int = 60000) -> list[str]:
    """The special tokens, then tokens seen at least ``min_freq`` times, most frequent first
    (ties alphabetical, so the vocab is deterministic), ``max_vocab`` entries at most."""
    counts = Counter(t for doc in docs for t in doc)
    special = set(SPECIALS)
    words = sorted((t for t, n in counts.items() if n >= min_freq and t not in special), key=lambda t: (-counts[t], t))
    return [*SPECIALS, *words][:max(max_vocab, len(SPECIALS))]


def numericalize(tokens: Sequence[str], stoi: dict[str, int]) -> list[int]:
    """Token ids; tokens outside the vocab become ``xxunk`` (id 0)."""
    return [stoi.get(t, UNK_ID) for t in tokens]


def detokenize(tokens: Sequence[str]) -> str:
    """Readable text back from tokens: case marks and repetitions undone, xxbos/xxpad dropped."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if t in (BOS, PAD) or (t in (MAJ, UP) and not nxt):  # a case mark cut from its word
            i += 1
        elif t == MAJ and nxt:
            out.append(nxt.capitalize())
            i += 2
        elif t == UP and nxt:
            out.append(nxt.upper())
            i += 2
        elif t in (REP, WREP) and i + 2 < len(tokens) and tokens[i + 1].isdigit():
            n, what = int(tokens[i + 1]), tokens[i + 2]
            out.append(what * n if t == REP else " ".join([what] * n))
            i += 3
        else:
            out.append(t)
            i += 1
    text = " ".join(out)
    return re.sub(r" ([.,:;!?)\]}]|n't\b|'(?:s|re|ve|ll|d|m)\b)", r"\1", text).replace("( ", "(")
