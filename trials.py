"""
The text files of evaluation: VoxCeleb trial lists, ASVspoof protocols and score files.

One reader per format, and one error format for all of them, `file:line: what is wrong`,
so that a typo in a million-line list names its line. Conventions (docs/method.md Sec. 7
and 8): a trial is `label enroll test` with label 1 = same speaker; a protocol line names a
file and its key (bonafide / spoof); a score file holds `enroll test score` (SV) or
`filename score` (CM), a higher score meaning target / bona fide (metrics.py).
"""

import math
import warnings
from typing import NamedTuple

import numpy as np

# ------------------------------------------------------------- trial lists and protocols


def text_lines(path):
    """(line number, whitespace-split fields) of every non-blank line of a text file."""
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if fields:
                yield lineno, fields


class TrialList(list):
    """A list of (label, enroll, test) that remembers its file and line numbers,
    so that errors about a trial can point at the line it came from."""

    def __init__(self, items=(), path=None, line_numbers=None):
        super().__init__(items)
        self.path = path
        self.line_numbers = (list(line_numbers) if line_numbers is not None
                             else list(range(1, len(self) + 1)))


def read_trials(path) -> TrialList:
    """VoxCeleb trial list: one `label enroll test` per line, label 1 (same speaker) or 0.
    A repeated trial or an empty list is an error."""
    items, linenos, seen = [], [], {}
    for lineno, f in text_lines(path):
        if len(f) != 3 or f[0] not in ("0", "1"):
            raise ValueError(f"{path}:{lineno}: expected '<0|1> <enroll> <test>', "
                             f"got {' '.join(f)!r}")
        key = (f[1], f[2])
        if key in seen:
            raise ValueError(f"{path}:{lineno}: trial {f[1]} {f[2]} repeats line {seen[key]}")
        seen[key] = lineno
        items.append((int(f[0]), f[1], f[2]))
        linenos.append(lineno)
    if not items:
        raise ValueError(f"{path}: no trials")
    return TrialList(items, path, linenos)


class ProtocolEntry(NamedTuple):
    file: str          # file name without extension, e.g. T_0000000001
    label: int         # 1 bona fide, 0 spoof
    attack: str        # attack label (A01, ...), or "bonafide"
    line: int          # line number in the protocol


# Columns (0-based) of file name, attack label and key, by the number of columns:
#   ASVspoof5:          speaker file gender codec codec_q codec_seed attack_tag attack_label key tmp
#   ASVspoof 2019 LA:   speaker file - attack key
PROTOCOL_COLUMNS = {10: (1, 7, 8), 5: (1, 3, 4)}
PROTOCOL_FORMATS = {10: "ASVspoof5", 5: "ASVspoof 2019 LA"}


def read_protocol(path, columns=(10, 5)) -> list:
    """ASVspoof5 or ASVspoof 2019 LA protocol -> [ProtocolEntry], in file order.
    `columns`: the accepted formats, by column count. All lines must share one format;
    a repeated file or an empty file is an error."""
    entries, seen, ncols = [], {}, None
    for lineno, f in text_lines(path):
        if len(f) not in columns or (ncols is not None and len(f) != ncols):
            accepted = [ncols] if ncols else columns
            expected = " or ".join(f"{n} ({PROTOCOL_FORMATS[n]})" for n in accepted)
            raise ValueError(f"{path}:{lineno}: expected {expected} columns, "
                             f"got {len(f)}: {' '.join(f)!r}")
        ncols = len(f)
        file_col, attack_col, key_col = PROTOCOL_COLUMNS[ncols]
        fid, key = f[file_col], f[key_col]
        if key not in ("bonafide", "spoof"):
            raise ValueError(f"{path}:{lineno}: key (column {key_col + 1}) must be bonafide "
                             f"or spoof, got {key!r}")
        if fid in seen:
            raise ValueError(f"{path}:{lineno}: file {fid} repeats line {seen[fid]}")
        seen[fid] = lineno
        entries.append(ProtocolEntry(fid, int(key == "bonafide"), "bonafide" if key == "bonafide"
                                     else f[attack_col], lineno))
    if not entries:
        raise ValueError(f"{path}: no entries")
    return entries



# ------------------------------------------------------------------------ score files


def _float(text, path, lineno):
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: score {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}:{lineno}: score {text!r} is not finite")
    return value


def read_scores(path) -> dict:
    """SV score file, one `enroll test score` per line -> {(enroll, test): score}."""
    scores, seen = {}, {}
    for lineno, f in text_lines(path):
        if len(f) != 3:
            raise ValueError(f"{path}:{lineno}: expected '<enroll> <test> <score>', "
                             f"got {' '.join(f)!r}")
        key = (f[0], f[1])
        if key in seen:
            raise ValueError(f"{path}:{lineno}: duplicate score for {f[0]} {f[1]} "
                             f"(first on line {seen[key]})")
        seen[key] = lineno
        scores[key] = _float(f[2], path, lineno)
    return scores


def write_scores(path, trials, scores):
    """Write `enroll test score` lines; trials are (label, enroll, test) or (enroll, test)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if len(trials) != len(scores):
        raise ValueError(f"{len(trials)} trials but {len(scores)} scores")
    with open(path, "w", encoding="utf-8") as f:
        for trial, s in zip(trials, scores):
            f.write(f"{trial[-2]} {trial[-1]} {float(s)!r}\n")  # repr: round-trips exactly


def read_cm_scores(path) -> dict:
    """CM score file, `filename score` per line -> {filename: score}. An optional header
    line whose first field is 'filename' (ASVspoof5 submission format) is skipped."""
    scores, seen = {}, {}
    for lineno, f in text_lines(path):
        if not seen and not scores and f[0] == "filename":
            continue
        if len(f) != 2:
            raise ValueError(f"{path}:{lineno}: expected '<filename> <score>', "
                             f"got {' '.join(f)!r}")
        if f[0] in seen:
            raise ValueError(f"{path}:{lineno}: duplicate score for {f[0]} "
                             f"(first on line {seen[f[0]]})")
        seen[f[0]] = lineno
        scores[f[0]] = _float(f[1], path, lineno)
    return scores


def _match_scores(keys, labels, names, score_map, what, source):
    """Scores in the order of `keys` (with `labels` 1/0). A key without a score is an
    error that names it (`names`: how to show each key); extra scores only warn."""
    missing = [name for key, name in zip(keys, names) if key not in score_map]
    if missing:
        shown = "; ".join(missing[:5]) + ("; ..." if len(missing) > 5 else "")
        raise ValueError(f"{source}: no score for {len(missing)} of {len(keys)} {what}: {shown}")
    if len(score_map) > len(keys):
        warnings.warn(f"{source}: {len(score_map) - len(keys)} scores are not in the {what}; "
                      f"ignored")
    scores = np.array([score_map[key] for key in keys], dtype=np.float64)
    return scores, np.asarray(labels) == 1


def match_sv_scores(trials, score_map, source="score file"):
    """Scores and labels in trial-list order. Missing trials are an error naming them
    (with trial-list line numbers); extra scores are ignored with a warning."""
    linenos = getattr(trials, "line_numbers", range(1, len(trials) + 1))
    tpath = getattr(trials, "path", None) or "trials"
    keys = [(e, t) for _, e, t in trials]
    names = [f"{e} {t} ({tpath}:{ln})" for (e, t), ln in zip(keys, linenos)]
    return _match_scores(keys, [y for y, _, _ in trials], names, score_map, "trials", source)


def match_cm_scores(protocol, score_map, source="score file"):
    """Scores and labels in protocol order; missing files are an error naming them."""
    keys = list(protocol)
    return _match_scores(keys, list(protocol.values()), keys, score_map, "protocol files", source)


def load_sv(scores_path, trials_path):
    """Scores and labels of a score file, in the order of a trial list (read_trials)."""
    return match_sv_scores(read_trials(trials_path), read_scores(scores_path),
                           source=str(scores_path))


def load_cm(scores_path, protocol_path):
    """Scores and labels of a CM score file, in the order of a protocol (read_protocol)."""
    protocol = {entry.file: entry.label for entry in read_protocol(protocol_path)}
    return match_cm_scores(protocol, read_cm_scores(scores_path), source=str(scores_path))
