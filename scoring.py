"""
Scoring a model on a dataset: embed every evaluation utterance once, score the SV trial
lists by cosine similarity (optionally AS-normalised against a cohort) or read the CM
LLRs, and compute the metrics of each list (metrics.py).

Scoring follows the speaker-verification recipes the seed paper builds on (Peng et al.
2025, arXiv 2508.16232, Sec. 4; wespeaker): cosine on L2-normalised embeddings, after
subtracting a mean embedding, then adaptive symmetric normalisation (AS-norm) with the
top-N closest cohort speakers. docs/method.md Sec. 7 gives the conventions.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import checkpoints
import data
import metrics

def _embedding_matrix(embeddings, names, mean=None):
    """Stack, optionally subtract a mean, L2-normalise -> (N, E) float32 tensor."""
    rows = []
    for n in names:
        if n not in embeddings:
            raise KeyError(f"no embedding for utterance {n!r}")
        rows.append(torch.as_tensor(embeddings[n]).reshape(-1).float())
    E = torch.stack(rows)  # (N, E)
    if mean is not None:
        E = E - torch.as_tensor(mean, dtype=E.dtype).reshape(1, -1)
    return F.normalize(E, dim=1)


def _trial_index(trials):
    """-> (utterance names, enroll idx (n,), test idx (n,)). Trials: (.., enroll, test)."""
    index = {}
    for tr in trials:
        index.setdefault(tr[-2], len(index))
        index.setdefault(tr[-1], len(index))
    ei = torch.tensor([index[tr[-2]] for tr in trials], dtype=torch.long)
    ti = torch.tensor([index[tr[-1]] for tr in trials], dtype=torch.long)
    return list(index), ei, ti


def cosine_score(embeddings, trials, mean=None, chunk: int = 65536) -> np.ndarray:
    """Cosine similarity for every trial, in trial order.

    embeddings: {utterance: (E,) tensor or array}. mean: optional (E,) vector subtracted
    before normalising, typically the mean of a cohort / training-set embedding: it removes
    the shared direction that makes all cosines large and compresses the score range."""
    names, ei, ti = _trial_index(trials)
    E = _embedding_matrix(embeddings, names, mean)  # (N, E)
    return _pair_cosine(E, ei, ti, chunk).numpy().astype(np.float64)


def _pair_cosine(E, ei, ti, chunk=65536):
    """Row-wise dot products of unit vectors E[ei] . E[ti] -> (n,) float32 tensor."""
    out = torch.empty(len(ei))
    for a in range(0, len(ei), chunk):  # bounded memory for ~10^6 trials
        out[a:a + chunk] = (E[ei[a:a + chunk]] * E[ti[a:a + chunk]]).sum(1)
    return out


def as_norm(embeddings, trials, cohort, top_n: int = 300, mean=None,
            chunk: int = 4096) -> np.ndarray:
    """Adaptive symmetric score normalisation (AS-norm; Cumani et al. 2011, Matejka et al.
    2017 "Analysis of score normalization in multilingual speaker recognition").

        s' = 1/2 [ (s - mu_e) / sigma_e + (s - mu_t) / sigma_t ]

    mu_e, sigma_e: mean and (population) std of enroll's top_n highest cosine scores
    against the cohort (e.g. per-speaker mean embeddings of the training set); likewise
    for test. "Adaptive": only the closest impostors count, so each side is normalised
    against the impostors that actually compete with it.

    cohort: (C, E) tensor/array. mean: optional vector subtracted from everything.
    """
    names, ei, ti = _trial_index(trials)
    E = _embedding_matrix(embeddings, names, mean)  # (N, E)
    C = torch.as_tensor(cohort).float().reshape(len(cohort), -1)  # (C, E)
    if mean is not None:
        C = C - torch.as_tensor(mean, dtype=C.dtype).reshape(1, -1)
    C = F.normalize(C, dim=1)
    k = min(int(top_n), C.shape[0])
    mu = torch.empty(E.shape[0])
    sd = torch.empty(E.shape[0])
    for a in range(0, E.shape[0], chunk):  # (chunk, C) score blocks bound the memory
        top = (E[a:a + chunk] @ C.t()).topk(k, dim=1).values  # (chunk, k)
        mu[a:a + chunk] = top.mean(1)
        sd[a:a + chunk] = top.std(1, correction=0).clamp_min(1e-8)
    raw = _pair_cosine(E, ei, ti)  # (n,)
    norm = 0.5 * ((raw - mu[ei]) / sd[ei] + (raw - mu[ti]) / sd[ti])
    return norm.numpy().astype(np.float64)


def score_sv(embeddings, trials, mean=None, cohort=None, top_n: int = 300) -> np.ndarray:
    """Cosine scores for a trial list, AS-normalised if a cohort is given. The entry
    point a checkpoint-evaluation mode can call after embedding the audio."""
    if cohort is None:
        return cosine_score(embeddings, trials, mean=mean)
    return as_norm(embeddings, trials, cohort, top_n=top_n, mean=mean)


# ------------------------------------------- a model on a dataset: embed once, score all lists


def embed_paths(score_fn, paths, num_workers: int = 0) -> dict:
    """{path: score_fn(wave)} for every file. score_fn maps a (1, S) float32 waveform to a
    1-D tensor: an SV embedding (E,) or a CM LLR (1,), e.g. classifier.utterance_scorer.

    Full utterances, one at a time: a GroupNorm extractor (Base) normalises over all
    frames, padding included, so batching unequal lengths would change the embeddings."""
    loader = DataLoader(data.EvalUtterances(paths), batch_size=1, num_workers=num_workers,
                        collate_fn=data.collate_pad)
    out = {}
    for waves, _, index in loader:                      # waves (1, S)
        out[paths[int(index[0])]] = score_fn(waves)
    return out


def evaluate_sets(score_fn, spec, names=None, cohort=None):
    """Metrics on a dataset's evaluation sets (data.DataSpec) -> ({name: metrics},
    {name: (scores, labels)}). Each file is embedded once, however many sets use it.
    SV scores are raw cosines; with a `cohort` (build_cohort) each SV set's metrics also
    hold "asnorm": the metrics after mean subtraction and AS-norm, the authors' scoring."""
    names = names or spec.eval_names()
    cache = embed_paths(score_fn, sorted({p for name in names for p in spec.eval_paths(name)}))
    results, raw = {}, {}
    for name in names:
        if spec.task == "sv":
            trials = spec.sv_trials(name)
            scores = score_sv(cache, trials)
            labels = np.array([y for y, _, _ in trials])
            results[name] = metrics.sv_metrics(scores, labels)
            if cohort is not None:
                normed = score_sv(cache, trials, mean=cohort["mean"], cohort=cohort["cohort"])
                results[name]["asnorm"] = metrics.sv_metrics(normed, labels)
        else:
            items = spec.cm_items(name)
            scores = np.array([float(cache[p]) for p, _ in items])
            labels = np.array([y for _, y in items])
            results[name] = metrics.cm_metrics(scores, labels)
        raw[name] = (np.asarray(scores), labels)
    return results, raw


# ------------------------------------------------------- the cohort: training speakers
def cohort_paths(train_items, per_speaker: int):
    """The first `per_speaker` files (sorted by path) of every training speaker ->
    (paths, speaker index of each). A few utterances per speaker, not all: the authors
    average every utterance of a speaker (1.09 M on VoxCeleb2-dev, about 180 each); 4 per
    speaker embed about 24,000 for its 5,994 speakers, 1/45 of the work, at the price of
    noisier speaker means (not measured against the full average: no VoxCeleb here)."""
    by_speaker = {}
    for path, label in sorted(train_items):
        if len(by_speaker.setdefault(label, [])) < per_speaker:
            by_speaker[label].append(path)
    pairs = [(p, s) for s in sorted(by_speaker) for p in by_speaker[s]]
    return [p for p, _ in pairs], [s for _, s in pairs]


def folder_speakers(folder):
    """[(audio file, speaker index)] of a cohort folder: the speaker is the first folder
    under `folder` (VoxCeleb's <speaker>/<video>/<utt>.wav; a leading wav/ is skipped)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--cohort {folder}: no such folder")
    root = os.path.join(folder, "wav") if os.path.isdir(os.path.join(folder, "wav")) else folder
    files = data.list_audio_files(root)
    speakers = [os.path.relpath(f, root).split(os.sep)[0] for f in files]
    index = {s: i for i, s in enumerate(sorted(set(speakers)))}
    items = [(f, index[s]) for f, s in zip(files, speakers) if s != os.path.basename(f)]
    if not items:
        raise ValueError(f"--cohort {folder}: no audio files in speaker folders "
                         f"(expected <speaker>/.../*.wav)")
    return items


def build_cohort(score_fn, train_items, per_speaker: int, num_workers: int = 0) -> dict:
    """The AS-norm cohort and the mean embedding, from the training speakers:
    cohort (S, E) = per-speaker mean embedding; mean (E,) = mean over all the embedded
    utterances (the authors' `--cal_mean`: it removes the direction every embedding
    shares, which makes all cosines large)."""
    paths, speakers = cohort_paths(train_items, per_speaker)
    emb = embed_paths(score_fn, paths, num_workers)
    E = torch.stack([emb[p].float().reshape(-1) for p in paths])          # (N, E)
    spk = torch.tensor(speakers)
    ids = spk.unique()                                                    # (S,)
    cohort = torch.stack([E[spk == s].mean(0) for s in ids])              # (S, E)
    return dict(cohort=cohort, mean=E.mean(0), utterances=len(paths), speakers=len(ids),
                per_speaker=per_speaker)


def centre_crop(score_fn, seconds: float, sample_rate: int = 16000):
    """score_fn on the middle `seconds` of each utterance (the whole of a shorter one)."""
    n = int(round(seconds * sample_rate))

    def cropped(wave):                                   # wave (1, S)
        start = max(0, (wave.shape[-1] - n) // 2)
        return score_fn(wave[..., start:start + n])
    return cropped


COHORT_SECONDS = 3.0     # the authors embed one 3-s chunk of each training utterance for the
                         # mean and the cohort (wespeaker extract_vox_train.sh)


def cached_cohort(score_fn, train_items, per_speaker: int, path, key: str,
                  crop_seconds: float = COHORT_SECONDS) -> dict:
    """build_cohort on centre crops of `crop_seconds`, kept in `path` under `key` (the model
    file's hash and these settings), so that evaluate.py --checkpoint on the same model
    reuses what train.py computed. A million-utterance cohort is minutes on a GPU."""
    key = f"{key}|{per_speaker}|{crop_seconds:g}|{len(train_items)}"
    if os.path.exists(path):
        saved = checkpoints.read_checkpoint(path)
        if saved.get("key") == key:
            return saved
    cohort = build_cohort(centre_crop(score_fn, crop_seconds), train_items, per_speaker)
    checkpoints.atomic_torch_save(dict(cohort, key=key), path)
    return cohort
