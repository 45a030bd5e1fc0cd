"""
Datasets for in-situ pruning: the real speech corpora, an offline toy corpus,
training crops (augmented by augment.py), and full-utterance evaluation loaders.

The data setup follows Peng et al. 2025, "Hybrid Pruning" (arXiv 2508.16232)
and the recipes it builds on:
- Speaker verification (SV): train on VoxCeleb2-dev, test on the VoxCeleb1
  trial lists O / E / H. Training uses random 3-s crops; MUSAN noise/babble/
  music and RIR reverberation are applied with probability 0.6. Evaluation
  embeds full utterances and scores trials by cosine similarity.
- Anti-spoofing (CM): train on ASVspoof5 train, validate on dev, test on eval
  (track 1), with 3-s crops; or ASVspoof 2019 LA.

Dataset layouts (what `prepare_data(name, data_root)` expects):
- vox1:  data_root/wav/idXXXXX/<video>/<utt>.wav, plus veri_test2.txt (Vox1-O)
         in data_root. Lines are "label enroll test", paths relative to wav/.
         Training speakers are those in no test trial (= VoxCeleb1-dev when
         the dev and test zips are unpacked into the same wav/ folder).
- vox2:  data_root/voxceleb2/dev/{wav,aac}/idXXXXX/<video>/<utt>.{wav,m4a}
         for training, and data_root/voxceleb1/ laid out as for vox1 for the
         tests (whichever of veri_test2.txt, list_test_all2.txt,
         list_test_hard2.txt exist). Pass vox1_root= to put VoxCeleb1
         elsewhere. The original VoxCeleb2 release is .m4a: if ffmpeg is on
         PATH it is converted once to dev/wav/ (16 kHz mono), else we stop
         and print the command that converts it.
- asvspoof5:    data_root/flac_T/, flac_D/, flac_E_eval/ and the protocols
         ASVspoof5.train.tsv, ASVspoof5.dev.track_1.tsv and (if released to
         you) ASVspoof5.eval.track_1.tsv: 10 space-separated columns
         speaker file gender codec codec_q codec_seed attack_tag attack_label key tmp.
- asvspoof2019: data_root (the LA/ folder) with ASVspoof2019_LA_{train,dev,eval}/flac/
         and ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt, in data_root
         or data_root/ASVspoof2019_LA_cm_protocols/. 5 columns:
         speaker file - attack key.
- toy / toy_spoof: generated on first use (see toy_corpus.py) into
         cache_dir (default $INSITU_PRUNING_CACHE or ~/.cache/insitu_pruning),
         in the vox1 / asvspoof5 layouts, and then parsed by those loaders.

Labels: SV class = speaker index (speakers sorted by id); CM class 1 = bona
fide, 0 = spoof, so that a higher score always means "target / bona fide".
"""

import hashlib
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import soundfile as sf
import torch
import torchaudio

from toy_corpus import make_toy_cm, make_toy_sv
from trials import TrialList, read_protocol, read_trials

SAMPLE_RATE = 16000
VOX1_TRIALS = {"vox1_o": "veri_test2.txt", "vox1_e": "list_test_all2.txt",
               "vox1_h": "list_test_hard2.txt"}

# ----------------------------------------------------------------------------
# audio I/O

_resample_noticed = set()


def _read_mono(f, frames=-1):
    """Up to `frames` samples (-1: all) from the position of an open sf.SoundFile ->
    mono float32 numpy (S,). 16-bit files are read as int16 and scaled here: libsndfile's
    own conversion gives the same values (x / 32768, exact in float32) 2.5x slower, and
    it was the largest cost of reading a training crop after opening the file."""
    if f.subtype == "PCM_16":
        return _pcm16_to_mono(f.read(frames, dtype="int16", always_2d=True))
    x = f.read(frames, dtype="float32", always_2d=True)
    return x[:, 0] if x.shape[1] == 1 else x.mean(axis=1)    # average channels to mono


def _pcm16_to_mono(ints):
    """(S, channels) int16 -> (S,) float32 in [-1, 1): x / 32768 (exact in float32),
    channels averaged."""
    x = np.multiply(ints, 1 / 32768, dtype=np.float32)
    return x[:, 0] if x.shape[1] == 1 else x.mean(axis=1)


def read_samples(path, start=0, stop=None):
    """Samples [start, stop) of a file -> (mono float32 numpy, sample rate); any
    failure becomes an error that names the file, since a bad file deep inside a
    1M-file corpus is otherwise hard to find."""
    try:
        with sf.SoundFile(path) as f:
            f.seek(start)
            x, sr = _read_mono(f, -1 if stop is None else stop - start), f.samplerate
    except Exception as e:
        raise RuntimeError(f"cannot read audio file {path}: {e}") from e
    if x.shape[0] == 0 and stop is None:
        raise RuntimeError(f"audio file {path} is empty")
    return x, sr


def _resample(x, sr, target_sr, path):
    if sr == target_sr:
        return x
    if sr not in _resample_noticed:     # one line per rate, not one per file
        _resample_noticed.add(sr)
        print(f"note: resampling {sr} Hz audio to {target_sr} Hz (first: {path})")
    return torchaudio.functional.resample(x, sr, target_sr)


def load_audio(path, target_sr=SAMPLE_RATE):
    """Whole file as a mono float32 tensor (S,) at target_sr."""
    x, sr = read_samples(path)
    return _resample(torch.from_numpy(x), sr, target_sr, path)


def audio_info(path):
    try:
        return sf.info(path)
    except Exception as e:
        raise RuntimeError(f"cannot read audio file {path}: {e}") from e

# ----------------------------------------------------------------------------
# what train.py gets: DataSpec


@dataclass
class DataSpec:
    """Everything training and evaluation need about a dataset.

    task          "sv" or "cm".
    train_items   [(absolute path, class index)].
    num_classes   speakers (SV) or 2 (CM).
    class_names   class index -> speaker id, or ["spoof", "bonafide"].
    SV only:
      eval_root    the folder that trial paths are relative to (".../wav").
      trials       name -> TrialList [(label 1/0, enroll rel path, test rel path)],
                   parsed and checked against the files on disk.
    CM only:
      dev_items    [(path, 1 bona fide / 0 spoof)] for validation during training.
      eval_items   the same for the test split (empty if there is no eval protocol).
      eval_attacks attack label per eval item ("bonafide" for bona fide).
      unseen_attacks  attacks in eval that never occur in train.
    """
    name: str
    task: str
    train_items: list
    num_classes: int
    class_names: list
    eval_root: str = ""
    trials: dict = field(default_factory=dict)
    dev_items: list = field(default_factory=list)
    eval_items: list = field(default_factory=list)
    eval_attacks: list = field(default_factory=list)
    unseen_attacks: list = field(default_factory=list)

    def eval_names(self):
        """Names of the evaluation sets, e.g. ["vox1_o", "vox1_e", "vox1_h"] or
        ["dev", "eval", "eval_unseen"] (the last only when eval mixes seen and
        unseen attacks, so that it differs from "eval")."""
        if self.task == "sv":
            return list(self.trials)
        names = ["dev"] + (["eval"] if self.eval_items else [])
        seen = {a for a in self.eval_attacks if a != "bonafide" and a not in self.unseen_attacks}
        if self.unseen_attacks and seen:
            names.append("eval_unseen")
        return names

    @property
    def valid_name(self):
        """The set for periodic evaluation during training (never CM eval)."""
        return self.eval_names()[0]

    @property
    def test_name(self):
        """The set whose EER goes into the final report."""
        return self.eval_names()[0] if self.task == "sv" else ("eval" if self.eval_items else "dev")

    def sv_trials(self, name):
        """[(label, enroll abs path, test abs path)] for one trial list."""
        return [(y, os.path.join(self.eval_root, a), os.path.join(self.eval_root, b))
                for y, a, b in self.trials[name]]

    def cm_items(self, name):
        """[(path, label)] for "dev", "eval" or "eval_unseen" (bona fide +
        the unseen attacks only)."""
        if name == "dev":
            return list(self.dev_items)
        if name == "eval":
            return list(self.eval_items)
        if name == "eval_unseen":
            keep = set(self.unseen_attacks) | {"bonafide"}
            return [it for it, a in zip(self.eval_items, self.eval_attacks) if a in keep]
        raise KeyError(f"unknown CM evaluation set {name!r}; have {self.eval_names()}")

    def without_files(self, bad):
        """A copy without the files in `bad` (absolute paths): training items, the trials
        that name one of them, and CM evaluation items."""
        def keep_trials(tl):
            rows = [(t, n) for t, n in zip(tl, tl.line_numbers)
                    if os.path.join(self.eval_root, t[1]) not in bad
                    and os.path.join(self.eval_root, t[2]) not in bad]
            return TrialList([t for t, _ in rows], tl.path, [n for _, n in rows])
        keep_eval = [i for i, (p, _) in enumerate(self.eval_items) if p not in bad]
        return replace(self, train_items=[it for it in self.train_items if it[0] not in bad],
                       trials={k: keep_trials(tl) for k, tl in self.trials.items()},
                       dev_items=[it for it in self.dev_items if it[0] not in bad],
                       eval_items=[self.eval_items[i] for i in keep_eval],
                       eval_attacks=[self.eval_attacks[i] for i in keep_eval])

    def first_speakers(self, n):
        """SV only: a copy trained on the first n training speakers (in class order), for
        low-resource experiments; evaluation is unchanged. Classes are renumbered 0..n-1."""
        if self.task != "sv":
            raise ValueError("--train-speakers applies to speaker verification only")
        if not 2 <= n <= self.num_classes:
            raise ValueError(f"--train-speakers {n}: the training set has {self.num_classes} "
                             f"speakers; choose from 2 to {self.num_classes}")
        return replace(self, train_items=[it for it in self.train_items if it[1] < n],
                       num_classes=n, class_names=self.class_names[:n])

    def eval_paths(self, name=None):
        """Sorted unique audio files of one evaluation set (or all of them):
        embed each once, then score trials / items from the cache."""
        names = [name] if name else self.eval_names()
        paths = set()
        for n in names:
            if self.task == "sv":
                paths.update(p for _, a, b in self.sv_trials(n) for p in (a, b))
            else:
                paths.update(p for p, _ in self.cm_items(n))
        return sorted(paths)

# ----------------------------------------------------------------------------
# layout parsers


def need_dir(path, what):
    """A folder the user named must exist; the error says what belongs in it."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"folder not found: {path}\nexpected there: {what}")


def _scan(root, ext):
    """Relative paths spk/video/utt.ext of a VoxCeleb-style tree (sorted)."""
    out = []
    for spk in sorted(os.listdir(root)):
        sdir = os.path.join(root, spk)
        if not os.path.isdir(sdir):
            continue
        for vid in sorted(os.listdir(sdir)):
            vdir = os.path.join(sdir, vid)
            if os.path.isdir(vdir):
                out += [f"{spk}/{vid}/{u}" for u in sorted(os.listdir(vdir)) if u.endswith(ext)]
    return out


def _speaker_items(root, rels):
    """[(abs path, speaker index)] and the sorted speaker list."""
    speakers = sorted({r.split("/")[0] for r in rels})
    index = {s: i for i, s in enumerate(speakers)}
    return [(os.path.join(root, r), index[r.split("/")[0]]) for r in rels], speakers


def _vox1_eval(root, names):
    """Parse the VoxCeleb1 test side: (wav root, set of its files, trial lists)."""
    wav = os.path.join(root, "wav")
    need_dir(wav, "VoxCeleb1 audio as wav/idXXXXX/<video>/<utt>.wav "
                   "(vox1_dev_wav and vox1_test_wav unpacked together) and the trial lists "
                   f"{', '.join(VOX1_TRIALS.values())} next to wav/")
    available = set(_scan(wav, ".wav"))
    lists = {k: os.path.join(root, VOX1_TRIALS[k]) for k in names
             if os.path.isfile(os.path.join(root, VOX1_TRIALS[k]))}
    if not lists:
        raise FileNotFoundError(f"no trial list in {root}: expected one of "
                                f"{', '.join(VOX1_TRIALS[k] for k in names)}")
    trials = {k: read_trials(p) for k, p in lists.items()}
    for name, tl in trials.items():
        for (_, a, b), lineno in zip(tl, tl.line_numbers):
            for p in (a, b):
                if p not in available:
                    raise FileNotFoundError(f"{lists[name]}:{lineno}: trial names {p}, "
                                            f"which is not in the audio folder {wav}")
    return wav, available, trials


def load_vox1(root, name="vox1"):
    """VoxCeleb1: train on the speakers of no Vox1-O trial, evaluate on Vox1-O.
    (Vox1-E/H use all 1,251 speakers, so they cannot be combined with
    VoxCeleb1 training; they are used with vox2.)"""
    wav, available, trials = _vox1_eval(root, ["vox1_o"])
    test_spk = {p.split("/")[0] for t in trials.values() for _, a, b in t for p in (a, b)}
    train = [r for r in sorted(available) if r.split("/")[0] not in test_spk]
    if not train:
        raise ValueError(f"{wav}: every speaker appears in a test trial, nothing left to train on")
    items, speakers = _speaker_items(wav, train)
    return DataSpec(name, "sv", items, len(speakers), speakers, eval_root=wav, trials=trials)


def _convert_m4a(src, dst):
    """VoxCeleb2 .m4a -> 16-kHz mono wav with ffmpeg, resumable: each file is
    written under a temporary name and renamed; a marker ends the job."""
    rels = _scan(src, ".m4a")
    print(f"converting {len(rels)} VoxCeleb2 .m4a files to 16-kHz wav in {dst} (one-off) ...")

    def one(rel):
        out = os.path.join(dst, rel[:-4] + ".wav")
        if os.path.exists(out):
            return
        os.makedirs(os.path.dirname(out), exist_ok=True)
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
                        "-i", os.path.join(src, rel),
                        "-ac", "1", "-ar", str(SAMPLE_RATE), out + ".tmp.wav"], check=True)
        os.replace(out + ".tmp.wav", out)

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(one, rels))
    open(os.path.join(dst, ".converted"), "w").close()


def load_vox2(root, vox1_root=None, name="vox2"):
    """VoxCeleb2-dev for training, VoxCeleb1 O/E/H for testing (the paper)."""
    v2 = os.path.join(root, "voxceleb2") if os.path.isdir(os.path.join(root, "voxceleb2")) else root
    dev = os.path.join(v2, "dev")
    need_dir(dev, "VoxCeleb2 dev set as dev/aac/idXXXXX/<video>/<utt>.m4a (original) or "
                   "dev/wav/idXXXXX/<video>/<utt>.wav (converted)")
    wav_dir, aac_dir = os.path.join(dev, "wav"), os.path.join(dev, "aac")
    done = os.path.exists(os.path.join(wav_dir, ".converted"))
    if not done and os.path.isdir(aac_dir) and _scan(aac_dir, ".m4a"):
        if shutil.which("ffmpeg"):
            _convert_m4a(aac_dir, wav_dir)                   # skips files already converted
        elif not (os.path.isdir(wav_dir) and _scan(wav_dir, ".wav")) and not _scan(aac_dir, ".wav"):
            raise RuntimeError(
                f"{aac_dir} holds .m4a audio, which soundfile cannot read. "
                f"Install ffmpeg and rerun "
                "(it is then converted once), or convert it yourself to "
                f"{wav_dir}/idXXXXX/<video>/<utt>.wav, e.g.\n"
                f"  cd {aac_dir} && find . -name '*.m4a' | while read f; do "
                f"mkdir -p \"{wav_dir}/$(dirname \"$f\")\"; "
                f"ffmpeg -nostdin -loglevel error -i \"$f\" -ac 1 -ar 16000 "
                f"\"{wav_dir}/${{f%.m4a}}.wav\"; done")
    # Converted copy in dev/wav/, or wav files converted in place inside dev/aac/.
    rels = _scan(wav_dir, ".wav") if os.path.isdir(wav_dir) else []
    if not rels and os.path.isdir(aac_dir):
        wav_dir, rels = aac_dir, _scan(aac_dir, ".wav")
    if not rels:
        raise FileNotFoundError(f"no audio under {dev}: "
                                f"expected aac/ or wav/ with idXXXXX/<video>/<utt>")
    v1 = vox1_root or os.path.join(root, "voxceleb1")
    need_dir(v1, "VoxCeleb1 for the tests (wav/ + veri_test2.txt, list_test_all2.txt, "
                  "list_test_hard2.txt); put it at <data_root>/voxceleb1 or pass vox1_root")
    eval_wav, _, trials = _vox1_eval(v1, list(VOX1_TRIALS))
    items, speakers = _speaker_items(wav_dir, rels)
    return DataSpec(name, "sv", items, len(speakers), speakers, eval_root=eval_wav, trials=trials)


def _cm_split(proto, audio_dir, ncols, ext=".flac"):
    """One split: its protocol, each named file checked on disk -> ([(path, label)], [attack])."""
    entries = read_protocol(proto, columns=(ncols,))
    present = set(os.listdir(audio_dir))
    for e in entries:
        if e.file + ext not in present:
            raise FileNotFoundError(f"{proto}:{e.line}: {e.file}{ext} is not in {audio_dir}")
    return ([(os.path.join(audio_dir, e.file + ext), e.label) for e in entries],
            [e.attack for e in entries])


def _load_cm(name, root, splits, ncols):
    """Shared by ASVspoof5 and 2019: splits = {split: (protocol, audio dir)}. Everything
    that is missing is named in one error; the eval protocol alone may be missing."""
    need_dir(root, "the protocols " + ", ".join(os.path.basename(p) for p, _ in splits.values())
              + " and the folders "
              + ", ".join(os.path.relpath(d, root) for _, d in splits.values()))
    missing = [p for split, (p, _) in splits.items() if split != "eval" and not os.path.isfile(p)]
    missing += [d for split, (p, d) in splits.items() if os.path.isfile(p) and not os.path.isdir(d)]
    if missing:
        raise FileNotFoundError(f"{name} in {root} is incomplete; not found:\n  "
                                + "\n  ".join(missing))
    parsed = {split: _cm_split(proto, audio, ncols) for split, (proto, audio) in splits.items()
              if os.path.isfile(proto)}
    (train, train_att), (dev, _) = parsed["train"], parsed["dev"]
    ev, ev_att = parsed.get("eval", ([], []))
    seen = set(train_att)
    unseen = sorted({a for a in ev_att if a != "bonafide" and a not in seen})
    return DataSpec(name, "cm", train, 2, ["spoof", "bonafide"], dev_items=dev, eval_items=ev,
                    eval_attacks=ev_att, unseen_attacks=unseen)


def load_asvspoof5(root, name="asvspoof5"):
    j = lambda *p: os.path.join(root, *p)
    return _load_cm(name, root, {"train": (j("ASVspoof5.train.tsv"), j("flac_T")),
                                 "dev": (j("ASVspoof5.dev.track_1.tsv"), j("flac_D")),
                                 "eval": (j("ASVspoof5.eval.track_1.tsv"), j("flac_E_eval"))}, 10)


def load_asvspoof2019(root, name="asvspoof2019"):
    pdir = os.path.join(root, "ASVspoof2019_LA_cm_protocols")
    pdir = pdir if os.path.isdir(pdir) else root
    splits = {s: (os.path.join(pdir, f"ASVspoof2019.LA.cm.{s}.{t}.txt"),
                  os.path.join(root, f"ASVspoof2019_LA_{s}", "flac"))
              for s, t in (("train", "trn"), ("dev", "trl"), ("eval", "trl"))}
    return _load_cm(name, root, splits, 5)


def default_cache_dir():
    return os.environ.get("INSITU_PRUNING_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "insitu_pruning"))


def prepare_data(name, data_root=None, cache_dir=None, seed=0, toy_size="default", vox1_root=None):
    """Parse (or, for toy sets, generate then parse) a dataset -> DataSpec.

    name       toy | toy_spoof | vox1 | vox2 | asvspoof5 | asvspoof2019
    data_root  the dataset folder (layouts in the module docstring); not used
               by the toy sets.
    cache_dir  where toy corpora live (default: $INSITU_PRUNING_CACHE or
               ~/.cache/insitu_pruning), one folder per (kind, seed, size).
    seed       the toy corpus seed: the same seed gives the same corpus.
    toy_size   "default" (sized for the 10-minute CPU recipe) or "tiny" (tests).
    vox1_root  vox2 only: VoxCeleb1 folder if not data_root/voxceleb1.
    """
    if name in ("toy", "toy_spoof"):
        sv = name == "toy"
        sub = f"toy_{'sv' if sv else 'cm'}_seed{seed}" + ("" if toy_size == "default"
                                                          else f"_{toy_size}")
        root = os.path.join(cache_dir or default_cache_dir(), sub)
        (make_toy_sv if sv else make_toy_cm)(root, seed, toy_size)
        return load_vox1(root, name) if sv else load_asvspoof5(root, name)
    loaders = {"vox1": load_vox1, "vox2": load_vox2, "asvspoof5": load_asvspoof5,
               "asvspoof2019": load_asvspoof2019}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; "
                         f"choose from toy, toy_spoof, {', '.join(loaders)}")
    if not data_root:
        raise ValueError(f"--data {name} needs --data-root (the dataset folder)")
    data_root = os.path.abspath(os.path.expanduser(data_root))
    if name == "vox2":
        return load_vox2(data_root, vox1_root)
    return loaders[name](data_root)

# ----------------------------------------------------------------------------
# every file checked before the first step


# shorter files hold about one syllable: a damaged or mislabelled file
MIN_AUDIO_SECONDS = 0.5


def _probe(path):
    """(size, mtime_ns, sample rate, frames, problem or ""). The header is enough for
    most files; an uncompressed file whose header promises more samples than the file
    holds is read in full, since that is how a truncated copy looks."""
    st = os.stat(path)
    try:
        info = sf.info(path)
        frames = info.frames
        width = {"PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
                 "PCM_U8": 1, "PCM_S8": 1}
        if info.subtype in width and st.st_size < frames * info.channels * width[info.subtype]:
            frames = len(sf.read(path, dtype="float32", always_2d=True)[0])
        problem = "" if frames > 0 else "no audio samples"
        return st.st_size, st.st_mtime_ns, info.samplerate, frames, problem
    except Exception as e:                       # soundfile's errors name the format problem
        return st.st_size, st.st_mtime_ns, 0, 0, " ".join(str(e).split())[:200] or type(e).__name__


class FileChecks:
    """A cache of _probe results keyed by path and invalidated by size and mtime, so a
    million-file corpus is read once: one tab-separated line per file."""

    def __init__(self, path):
        self.path, self.rows = path, {}
        if path and os.path.exists(path):
            for line in open(path, encoding="utf-8"):
                f = line.rstrip("\n").split("\t")
                if len(f) == 6:
                    self.rows[f[0]] = (int(f[1]), int(f[2]), int(f[3]), int(f[4]), f[5])

    def probe_all(self, paths, progress=True):
        todo = []
        for p in paths:
            row = self.rows.get(p)
            st = os.stat(p) if os.path.exists(p) else None
            if st is None:
                self.rows[p] = (0, 0, 0, 0, "file not found")
            elif row is None or row[:2] != (st.st_size, st.st_mtime_ns):
                todo.append(p)
        if todo:
            from tqdm import tqdm
            # header reads wait on the disk, not the CPU
            with ThreadPoolExecutor(8) as pool:
                results = pool.map(_probe, todo)
                for p, row in tqdm(zip(todo, results), total=len(todo),
                                   disable=not progress or len(todo) < 2000,
                                   desc="checking audio files"):
                    self.rows[p] = row
            self.save()
        return {p: self.rows[p] for p in paths}

    def save(self):
        if not self.path:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = f"{self.path}.tmp-{os.getpid()}"     # two runs may check the same data at once
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines("\t".join(map(str, (p, *row))) + "\n" for p, row in self.rows.items())
        os.replace(tmp, self.path)


def _listing(paths, why, limit=10):
    shown = [f"  {p}: {why[p]}" if why else f"  {p}" for p in sorted(paths)[:limit]]
    return "\n".join(shown + ([f"  ... and {len(paths) - limit} more"] if len(paths) > limit
                              else []))


def check_files(spec, crop_seconds, cache_dir=None, skip_bad_files=False, progress=True):
    """Check every file a run will read (training and evaluation) before the first
    step -> (the DataSpec to use, a summary for config.json). The rules:
    - unreadable or empty files, and evaluation files shorter than MIN_AUDIO_SECONDS,
      are an error that names them (up to 10), unless skip_bad_files: then they are
      left out, with the trials or protocol entries that use them;
    - training files shorter than MIN_AUDIO_SECONDS are left out (listed);
    - training files shorter than the crop are tiled (repeated) up to it, by TrainCrops;
    - files at another sample rate are resampled to 16 kHz when read (counted here)."""
    t0 = time.time()
    train = sorted({p for p, _ in spec.train_items})
    evals = spec.eval_paths()
    key = hashlib.sha1((spec.eval_root + "|"
                        + (train[0] if train else "")).encode()).hexdigest()[:16]
    cache = FileChecks(os.path.join(cache_dir or default_cache_dir(), "file_checks",
                                    f"{spec.name}_{key}.tsv"))
    rows = cache.probe_all(sorted(set(train) | set(evals)), progress)
    seconds = {p: (r[3] / r[2] if r[2] else 0.0) for p, r in rows.items()}
    broken = {p: r[4] for p, r in rows.items() if r[4]}
    short_eval = {p: f"{seconds[p]:.2f} s" for p in evals
                  if p not in broken and seconds[p] < MIN_AUDIO_SECONDS}
    short_train = {p: f"{seconds[p]:.2f} s" for p in train
                   if p not in broken and seconds[p] < MIN_AUDIO_SECONDS}
    bad = {**broken, **short_eval}
    rates = {}
    for p, r in rows.items():
        if r[2] and r[2] != SAMPLE_RATE:
            rates[r[2]] = rates.get(r[2], 0) + 1
    tiled = sum(1 for p in train if p not in bad and MIN_AUDIO_SECONDS <= seconds[p] < crop_seconds)
    notes = []                           # what the run goes on with (said in the error too)
    if short_train:
        notes.append(f"{len(short_train)} training file(s) shorter than {MIN_AUDIO_SECONDS} s "
                     f"are left out:\n"
                     + _listing(short_train, short_train))
    if tiled:
        notes.append(f"{tiled} training file(s) are shorter than the {crop_seconds:g}-s crop "
                     f"and are tiled (repeated) up to it")
    if rates:
        notes.append("resampled to 16 kHz when read: "
                     + ", ".join(f"{n} file(s) at {sr} Hz" for sr, n in sorted(rates.items())))
    if bad and not skip_bad_files:
        parts = []
        if broken:
            parts.append(f"{len(broken)} unreadable or empty audio file(s):\n"
                         + _listing(broken, broken))
        if short_eval:
            parts.append(f"{len(short_eval)} evaluation file(s) shorter than "
                         f"{MIN_AUDIO_SECONDS} s:\n"
                         + _listing(short_eval, short_eval))
        raise ValueError("\n".join(parts)
                         + "\nReplace them, or pass --skip-bad-files to leave them out "
                         "(with the trials or protocol entries that use them; "
                         "listed in config.json)."
                         + "".join(f"\nThe same check also found: {note}" for note in notes))
    if bad:
        notes.append(f"--skip-bad-files leaves out {len(bad)} file(s):\n" + _listing(bad, bad))
    for note in notes:
        print("note: " + note)
    summary = dict(checked=len(rows), seconds=round(time.time() - t0, 2), skipped=sorted(bad),
                   skipped_reasons={p: bad[p] for p in sorted(bad)},
                   left_out_short_training=sorted(short_train),
                   tiled_training=tiled, resampled={str(sr): n for sr, n in rates.items()})
    return spec.without_files(set(bad) | set(short_train)), summary

# ----------------------------------------------------------------------------
# training crops (their augmentation: augment.py)


def list_audio_files(folder):
    out = []
    for d, _, files in os.walk(folder):
        out += [os.path.join(d, f) for f in files if f.endswith((".wav", ".flac"))]
    return sorted(out)


def _fit(x, n, rng):
    """Exactly n samples: a random window of a long signal, or the signal
    repeated (tiled) when it is short; repeating keeps the statistics of
    speech, where zero padding would teach the model about silence."""
    if len(x) < n:
        x = x.repeat(n // len(x) + 1)
    start = int(rng.integers(0, len(x) - n + 1))
    return x[start:start + n]


WAV_HEADER_BYTES = 4096   # read at once to find a WAV's "data" chunk: at byte 44 after a
                          # plain header, a few hundred bytes on with metadata chunks


def pcm16_wav_layout(header: bytes, file_bytes: int):
    """(data offset in bytes, frames, channels, sample rate) of a little-endian 16-bit PCM
    RIFF/WAVE file from its first bytes and its size; None for any other file (and for a
    WAV whose samples are not all there), which soundfile then reads.

    A RIFF file is a list of chunks: an id (4 bytes), a little-endian 32-bit size, and
    that many bytes, padded to an even length. "fmt " describes the samples and "data"
    holds them, interleaved by channel. WAVE_FORMAT_EXTENSIBLE (format tag 0xFFFE)
    carries the real tag in the first two bytes of its sub-format GUID."""
    u16 = lambda at: int.from_bytes(header[at:at + 2], "little")
    u32 = lambda at: int.from_bytes(header[at:at + 4], "little")
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    pos, fmt = 12, None
    while pos + 8 <= len(header):
        chunk, size, body = header[pos:pos + 4], u32(pos + 4), pos + 8
        if chunk == b"fmt ":
            if size < 16 or body + size > len(header):
                return None
            tag, channels, rate, block, bits = (u16(body), u16(body + 2), u32(body + 4),
                                                u16(body + 12), u16(body + 14))
            if tag == 0xFFFE and size >= 40:
                tag = u16(body + 24)
            if (tag, bits) != (1, 16) or channels == 0 or block != 2 * channels:
                return None
            fmt = (channels, rate)
        elif chunk == b"data":
            if fmt is None or body + size > file_bytes:      # truncated: soundfile decides
                return None
            return body, size // (2 * fmt[0]), *fmt
        pos = body + size + (size & 1)
    return None


def _read_pcm16_window(fh, layout, n, rng):
    """read_random_window without soundfile: the same draw of the start, the bytes of
    those n frames, scaled and averaged over channels as _read_mono does -> (S=n,)."""
    offset, frames, channels, _ = layout
    start = int(rng.integers(0, frames - n + 1))
    fh.seek(offset + 2 * channels * start)
    raw = fh.read(2 * channels * n)
    if len(raw) != 2 * channels * n:
        raise RuntimeError(f"{len(raw) // (2 * channels)} samples from {start}, header: "
                           f"{frames}; the file changed while it was read")
    return _pcm16_to_mono(np.frombuffer(raw, "<i2").reshape(n, channels))


def read_random_window(path, n, rng):
    """n samples (S=n,) of the file at `path` as a float32 tensor at SAMPLE_RATE: the
    window `_fit(load_audio(path), n, rng)` would cut, with the same single draw from rng.

    A 16-kHz file at least n long is read by window alone, in one open that also gives
    the length: VoxCeleb utterances average 8 s and MUSAN music files 3 min, of which a
    crop needs 3 s, and reading whole files made augmented loading 20x slower than
    plain crops. 16-bit PCM WAV (VoxCeleb as converted, MUSAN, RIRS_NOISES) is read
    without soundfile, at the offset its header gives (pcm16_wav_layout): opening a
    file through libsndfile cost about as much as reading the crop, and babble reads 3-7
    files per crop (docs/performance.md). A shorter file is tiled (_fit); a file at
    another rate is resampled whole first (rare)."""
    try:
        with open(path, "rb") as fh:
            layout = pcm16_wav_layout(fh.read(WAV_HEADER_BYTES), os.fstat(fh.fileno()).st_size)
            if layout is not None and layout[3] == SAMPLE_RATE and layout[1] >= n:
                return torch.from_numpy(_read_pcm16_window(fh, layout, n, rng))
            fh.seek(0)                                     # anything else: soundfile, same file
            with sf.SoundFile(fh) as f:
                frames, sr = f.frames, f.samplerate
                if sr == SAMPLE_RATE and frames >= n:
                    start = int(rng.integers(0, frames - n + 1))
                    f.seek(start)
                    x = _read_mono(f, n)
    except Exception as e:
        raise RuntimeError(f"cannot read audio file {path}: {e}") from e
    if sr != SAMPLE_RATE or frames < n:
        return _fit(load_audio(path), n, rng)
    if len(x) < n:
        raise RuntimeError(f"audio file {path} is shorter than its header says ({len(x)} "
                           f"samples from {start}, header: {frames}); re-encode it or leave "
                           f"it out")
    return torch.from_numpy(x)


class TrainCrops(torch.utils.data.Dataset):
    """Random fixed-length crops for training, (wave (S,), label).

    The crop and its augmentation are drawn from numpy default_rng([seed,
    epoch, i]): independent of worker count, order and process, so resuming
    mid-epoch (or another DDP rank) reproduces exactly the same examples.
    Call set_epoch(e) at the start of every epoch.
    """

    def __init__(self, items, crop_seconds=3.0, seed=0, augment=None, reverb_later=False):
        self.items, self.seed, self.augment, self.epoch = list(items), seed, augment, 0
        self.n = int(round(crop_seconds * SAMPLE_RATE))
        self.reverb_later = reverb_later and augment is not None and bool(augment.rirs)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        wave = read_random_window(path, self.n, rng)
        if self.reverb_later:            # (wave, label, RIR (L,), empty if none): the
            wave, rir = self.augment.split(wave, rng)         # trainer calls augment.reverberate
            return wave, label, torch.zeros(0) if rir is None else rir
        if self.augment is not None:
            wave = self.augment(wave, rng)
        return wave, label


def epoch_batches(num_items, batch_size, epoch, seed, rank=0, world=1):
    """The index batches of one epoch, this rank's share. Derived from (seed, epoch)
    only, so a resumed run can regenerate them and skip the ones already done."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(num_items, generator=g).tolist()
    global_batch = batch_size * world
    return [order[i + rank * batch_size: i + (rank + 1) * batch_size]
            for i in range(0, num_items - global_batch + 1, global_batch)]


class EvalUtterances(torch.utils.data.Dataset):
    """Full utterances for evaluation, (wave (S,), index into paths)."""

    def __init__(self, paths):
        self.paths = list(paths)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return load_audio(self.paths[i]), i


def _pad(waves):
    """[(S_b,)] -> (B, S_max) zero-padded, lengths (B,)."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), max(1, int(lengths.max())))
    for b, w in enumerate(waves):
        out[b, :len(w)] = w
    return out, lengths


def collate_pad(batch):
    """[(wave, label)] -> (waves (B, S_max) zero-padded, lengths (B,), labels (B,)).
    Models mask the padding using `lengths`. Items with a RIR (TrainCrops with
    reverb_later) add (rirs (B, L_max) zero-padded, rir lengths (B,)) for augment.reverberate."""
    waves, labels, *rirs = zip(*batch)
    out = (*_pad(waves), torch.tensor(labels, dtype=torch.long))
    return out + _pad(rirs[0]) if rirs else out
